"""Autograd functions that move activations into and out of the tensor-parallel region.

Each forward has the conjugate backward:

    copy    (identity   / all-reduce)   enter a region whose weights are split
    reduce  (all-reduce / identity)     leave a region of partial sums
    scatter (split      / all-gather)   take this rank's slice of the last dimension
    gather  (all-gather / split)        rebuild the full last dimension

Collectives never work in place on their input: autograd may share that tensor with other users.
"""

import torch
import torch.distributed as dist

from .initialize import get_model_parallel_group, get_model_parallel_rank, get_model_parallel_world_size
from .utils import split_tensor_along_last_dim


def _reduce(tensor):
    if get_model_parallel_world_size() == 1:
        return tensor
    tensor = tensor.clone()
    dist.all_reduce(tensor, group=get_model_parallel_group())
    return tensor


def _split(tensor):
    world_size = get_model_parallel_world_size()
    if world_size == 1:
        return tensor
    return split_tensor_along_last_dim(tensor, world_size)[get_model_parallel_rank()].contiguous()


def _gather(tensor):
    world_size = get_model_parallel_world_size()
    if world_size == 1:
        return tensor
    tensor = tensor.contiguous()
    pieces = [torch.empty_like(tensor) for _ in range(world_size)]
    dist.all_gather(pieces, tensor, group=get_model_parallel_group())
    return torch.cat(pieces, dim=-1)


class _CopyToModelParallelRegion(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input_):
        return input_

    @staticmethod
    def backward(ctx, grad_output):
        return _reduce(grad_output)


class _ReduceFromModelParallelRegion(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input_):
        return _reduce(input_)

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output


class _ScatterToModelParallelRegion(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input_):
        return _split(input_)

    @staticmethod
    def backward(ctx, grad_output):
        return _gather(grad_output)


class _GatherFromModelParallelRegion(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input_):
        return _gather(input_)

    @staticmethod
    def backward(ctx, grad_output):
        return _split(grad_output)


def copy_to_model_parallel_region(input_):
    return _CopyToModelParallelRegion.apply(input_)


def reduce_from_model_parallel_region(input_):
    return _ReduceFromModelParallelRegion.apply(input_)


def scatter_to_model_parallel_region(input_):
    return _ScatterToModelParallelRegion.apply(input_)


def gather_from_model_parallel_region(input_):
    return _GatherFromModelParallelRegion.apply(input_)
