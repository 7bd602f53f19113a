"""Gradient clipping by the norm of the whole (unpartitioned) model, over tensor-parallel slices and
pipeline stages."""

import math

import torch
import torch.distributed as dist

from .initialize import get_model_parallel_group, get_model_parallel_rank, get_pipeline_model_parallel_group


def _counted_here(param):
    """A partitioned parameter counts on every rank (each holds a distinct slice); a replicated one
    (LayerNorm, RowParallelLinear bias) only on tensor-parallel rank 0; the copy of a weight tied across
    pipeline stages (which DeepSpeed marks ds_pipe_replicated) only on its first stage."""
    if getattr(param, "ds_pipe_replicated", False):
        return False
    return getattr(param, "tensor_model_parallel", False) or get_model_parallel_rank() == 0


def _reduce(total, op=dist.ReduceOp.SUM):
    for group in (get_model_parallel_group(), get_pipeline_model_parallel_group()):
        dist.all_reduce(total, op=op, group=group)


def grad_norm(parameters, norm_type=2, sharded_group=None):
    """The norm of the full model's gradient: partitioned slices are summed across the tensor-parallel
    group, stages across the pipeline group, and replicated parameters are counted once. norm_type may
    be inf. sharded_group(param) -> a process group or None: a parameter with a group is one of many that
    the ranks of that group hold each their own of (a mixture of experts' experts over its expert-parallel
    group), summed over that group first."""
    if torch.is_tensor(parameters):
        parameters = [parameters]
    parameters = [p for p in parameters if p.grad is not None]
    norm_type = float(norm_type)
    device = parameters[0].grad.device if parameters else torch.device("cpu")
    by_group = {}
    for p in parameters:
        if _counted_here(p):
            group = sharded_group(p) if sharded_group else None
            by_group.setdefault(group, []).append(p.grad.detach().float())
    by_group.setdefault(None, [])
    maximum = norm_type == math.inf
    op = dist.ReduceOp.MAX if maximum else dist.ReduceOp.SUM
    parts = []
    for group, grads in by_group.items():
        if maximum:
            part = torch.stack([g.abs().max() for g in grads]).max() if grads else torch.zeros((), device=device)
        else:
            part = sum((g.norm(norm_type) ** norm_type for g in grads), torch.zeros((), device=device))
        if group is not None:
            dist.all_reduce(part, op=op, group=group)
        parts.append(part)
    total = torch.stack(parts).max() if maximum else sum(parts)
    _reduce(total, op=op)
    return total.item() if maximum else total.item() ** (1.0 / norm_type)


def clip_grad_norm(parameters, max_norm, norm_type=2, sharded_group=None):
    """Scale gradients in place so that their total norm (see grad_norm) is at most `max_norm`;
    return the norm before scaling."""
    parameters = [parameters] if torch.is_tensor(parameters) else list(parameters)
    total = grad_norm(parameters, norm_type, sharded_group)
    clip_coef = max_norm / (total + 1e-6)
    if clip_coef < 1.0:
        for p in parameters:
            if p.grad is not None:
                p.grad.detach().mul_(clip_coef)
    return total
