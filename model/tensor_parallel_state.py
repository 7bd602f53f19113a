"""Split a full (TP=1) state dict into tensor-parallel shards and merge shards back, by parameter name.

The rules mirror mpu's layers as model/ uses them: the vocabulary (word embeddings, an untied output
embedding, the masked-LM bias) and column-parallel weights are split along dim 0, row-parallel weights
along dim 1, the fused QKV projection along dim 0 with stride 3 (each rank holds its q, k and v heads)
and a gated MLP's projection with stride 2 (each rank holds value and gate of its columns). Everything
else is replicated.
"""

import torch

VOCABULARY = ("word_embeddings.weight", "output_embeddings.weight", "lm_bias")  # rows: padded vocabulary
_RULES = (  # (name suffix, dim, stride)
    ("word_embeddings.weight", 0, 1),
    ("output_embeddings.weight", 0, 1),
    ("lm_bias", 0, 1),
    ("query_key_value.weight", 0, 3),
    ("query_key_value.bias", 0, 3),
    ("attention.dense.weight", 1, 1),
    ("dense_h_to_4h.weight", 0, 1),
    ("dense_h_to_4h.bias", 0, 1),
    ("gated_h_to_4h.weight", 0, 2),
    ("gated_h_to_4h.bias", 0, 2),
    ("dense_4h_to_h.weight", 1, 1),
)


def is_vocabulary(name):
    return name.endswith(VOCABULARY)


def partition_of(name):
    """(dim, stride) for a partitioned parameter, None for a replicated one."""
    return next(((dim, stride) for suffix, dim, stride in _RULES if name.endswith(suffix)), None)


def shard_of(name, tensor, world_size, rank):
    """Tensor-parallel rank `rank`'s part of the full tensor of parameter `name` (the tensor itself when
    replicated)."""
    partition = partition_of(name)
    if partition is None:
        return tensor
    dim, stride = partition
    if tensor.size(dim) % (world_size * stride):
        raise ValueError(f"{name}: dimension {dim} of size {tensor.size(dim)} does not split into "
                         f"{world_size} tensor-parallel shards")
    chunks = torch.chunk(tensor, world_size * stride, dim=dim)
    return torch.cat(chunks[rank::world_size], dim=dim)


def split_state(state, world_size):
    """[state of rank 0, ..., state of rank world_size - 1] from a full state dict."""
    return [{name: shard_of(name, tensor, world_size, rank).clone() for name, tensor in state.items()}
            for rank in range(world_size)]


def merge_states(shards):
    """The full state dict from the states of every tensor-parallel rank, in rank order."""
    world_size = len(shards)
    merged = {}
    for name, tensor in shards[0].items():
        partition = partition_of(name)
        if partition is None:
            merged[name] = tensor
            continue
        dim, stride = partition
        pieces = [torch.chunk(shard[name], stride, dim=dim) for shard in shards]
        merged[name] = torch.cat([pieces[rank][s] for s in range(stride) for rank in range(world_size)], dim=dim)
    return merged
