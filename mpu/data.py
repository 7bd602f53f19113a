"""Broadcast a batch from tensor-parallel rank 0 to the other ranks of its group.

Only rank 0 of each tensor-parallel group reads data; the others receive the same tensors, so every
shard of the model sees the same batch.
"""

import torch
import torch.distributed as dist
from deepspeed.accelerator import get_accelerator

from .initialize import get_model_parallel_group, get_model_parallel_rank, get_model_parallel_src_rank

_MAX_DIMS = 8


def _broadcast_sizes(keys, data):
    """Shapes of data[key] for every key, sent from the source rank as one small tensor."""
    sizes = torch.zeros(len(keys), _MAX_DIMS + 1, dtype=torch.long)
    if get_model_parallel_rank() == 0:
        for row, key in enumerate(keys):
            shape = data[key].shape
            if len(shape) > _MAX_DIMS:
                raise ValueError(f"broadcast_data: data[{key!r}] has {len(shape)} dimensions, "
                                 f"at most {_MAX_DIMS} are supported")
            sizes[row, 0] = len(shape)
            sizes[row, 1:1 + len(shape)] = torch.tensor(shape, dtype=torch.long)
    sizes = sizes.to(get_accelerator().current_device_name())
    dist.broadcast(sizes, get_model_parallel_src_rank(), group=get_model_parallel_group())
    return [tuple(row[1:1 + row[0]]) for row in sizes.cpu().tolist()]


def broadcast_data(keys, data, datatype):
    """Return {key: tensor} on every rank, equal to `data` on tensor-parallel rank 0.

    `data` is read only on the source rank (others may pass None); every data[key] must have dtype
    `datatype`. Tensors are sent flattened in one collective and come back on the accelerator.
    """
    if get_model_parallel_rank() == 0:
        for key in keys:
            if key not in data:
                raise KeyError(f"broadcast_data: key {key!r} is missing from the batch (has {sorted(data)})")
            if data[key].dtype != datatype:
                raise TypeError(f"broadcast_data: data[{key!r}] has dtype {data[key].dtype}, expected {datatype}")
    device = get_accelerator().current_device_name()
    if dist.get_world_size(group=get_model_parallel_group()) == 1:  # nothing to send: no size exchange, no sync
        return {key: data[key].to(device, non_blocking=True) for key in keys}
    shapes = _broadcast_sizes(keys, data)
    numels = [torch.Size(shape).numel() for shape in shapes]
    if get_model_parallel_rank() == 0:
        flat = torch.cat([data[key].contiguous().view(-1) for key in keys]).to(device)
    else:
        flat = torch.empty(sum(numels), dtype=datatype, device=device)
    dist.broadcast(flat, get_model_parallel_src_rank(), group=get_model_parallel_group())
    pieces = torch.split(flat, numels)
    return {key: piece.view(shape) for key, piece, shape in zip(keys, pieces, shapes)}
