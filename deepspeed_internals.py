"""Every place this project reaches into DeepSpeed's private API, in one module written for one release.

DeepSpeed's public surface (deepspeed.initialize, the engine's backward/step/save_checkpoint, the
safe_get/set_* fragment functions, the MoE layer) does not cover a few things we need: an fp32 ZeRO-0
step that clips by the model-parallel norm and skips non-finite steps, no gradient all-reduce over a
one-rank data-parallel group, the expert-parallel group of an expert's parameter, the optimizer
states a layout-free checkpoint writes into, the moment whole averaged gradients can be
preconditioned (K-FAC) before the optimizer takes them, and a finished engine that lets its model go. Each reach below names the private attribute it uses, and
tests/test_deepspeed_internals.py has a test per reach that fails when DeepSpeed's behaviour it relies
on changes. `require_written_version` stops a run on any other DeepSpeed release with one line.
"""

import functools
import math

import deepspeed
import torch
import torch.distributed as dist
import torch.nn.functional as F
from deepspeed.moe.utils import is_moe_param
from deepspeed.utils import (
    groups,
    safe_set_full_fp32_param,
    safe_set_full_optimizer_state,
    safe_set_local_fp32_param,
    safe_set_local_optimizer_state,
)

import mpu

WRITTEN_FOR = "0.19.8"


class DeepSpeedVersionError(RuntimeError):
    pass


def require_written_version(installed=None):
    """Raise DeepSpeedVersionError (one line naming both releases) unless DeepSpeed is the release this
    module was written for."""
    installed = installed or deepspeed.__version__
    if installed != WRITTEN_FOR:
        raise DeepSpeedVersionError(
            f"DeepSpeed {installed} is installed but deepspeed_internals.py was written for DeepSpeed {WRITTEN_FOR}: "
            f"pip install deepspeed=={WRITTEN_FOR} (as requirements.txt pins it), or run "
            "tests/test_deepspeed_internals.py against the new release and raise WRITTEN_FOR when it passes")


def expert_parallel_group(param):
    """The process group whose ranks hold each their own experts, for an expert's parameter (DeepSpeed
    marks them allreduce=False with a group_name); None for every other parameter."""
    if not is_moe_param(param):
        return None
    return groups._get_expert_parallel_group(param.group_name)


def skip_one_rank_allreduce(engine):
    """ZeRO-0 on one data-parallel rank: DeepSpeed would flatten every gradient, all-reduce it over the
    one rank and copy it back (2% of a small model's step on a CPU). At ZeRO 1-3 the same switch turns
    off the optimizer's own reduction, so only ZeRO-0 takes it."""
    if engine.zero_optimization_stage() == 0 and mpu.get_data_parallel_world_size() == 1:
        engine.enable_backward_allreduce = False


def release_engine(engine):
    """Let a finished engine's model and optimizer go: engine.destroy() removes the gradient and module
    hooks that tie them together through autograd's C++ nodes (a cycle gc cannot see), and ZeRO-3 leaves
    its model on parameter_offload.FWD_MODULE_STACK, a module-level list. Without both, a process that
    trains again (a test's ranks, a notebook, a sweep) keeps every earlier run's memory."""
    from deepspeed.runtime.zero import parameter_offload
    engine.destroy()
    modules = {id(module) for module in engine.module.modules()}
    parameter_offload.FWD_MODULE_STACK[:] = [
        module for module in parameter_offload.FWD_MODULE_STACK if id(module) not in modules]


def guard_fp32_steps(engine):
    """Without ZeRO, bf16 or fp16, DeepSpeed steps the torch optimizer itself: its clipping keeps no
    norm, takes each rank's own experts only (so data-parallel replicas of a mixture of experts clip by
    different factors and drift apart) and, over pipeline stages, the wrong norm (a stage's replicated
    parameters on the first stage only, a tied weight twice); and a non-finite gradient would be applied.
    Clip by mpu's norm over all groups instead, experts summed over their expert-parallel group (kept for
    the log), and skip a step whose norm is not finite, as DeepSpeed's own optimizers do on the other
    paths (it counts the skip and leaves the schedule where it was). Reaches: engine.clip_fp32_gradients,
    engine._global_grad_norm, optimizer.overflow."""
    optimizer, apply_step = engine.optimizer, engine.optimizer.step

    @functools.wraps(apply_step)  # keeps the marks the learning-rate scheduler put on the step it counts
    def guarded_step(closure=None):
        parameters, clip = list(engine.module.parameters()), engine.gradient_clipping()
        norm = mpu.clip_grad_norm(parameters, clip, sharded_group=expert_parallel_group) if clip > 0 else \
            mpu.grad_norm(parameters, sharded_group=expert_parallel_group)
        engine._global_grad_norm, optimizer.overflow = norm, not math.isfinite(norm)
        return None if optimizer.overflow else apply_step(closure)
    engine.clip_fp32_gradients = lambda: None
    optimizer.step = guarded_step


def precondition_gradients(engine, preconditioner):
    """Run preconditioner.step(learning rate of the step) once per iteration on whole, data-parallel-averaged
    gradients in param.grad, before DeepSpeed's optimizer takes them. ZeRO-0: the engine's reduction (none
    on one rank) leaves the averages in param.grad before it calls optimizer.step, which is wrapped
    (outside guard_fp32_steps: clipping sees the preconditioned gradient). ZeRO-1: at the accumulation
    boundary optimizer.reduce_gradients moves each gradient into the partition of the rank that owns it and
    drops param.grad; it is wrapped to run preconditioner.average_gradients() and the step first (the
    reduction then averages equal values). Reaches: optimizer.step, optimizer.reduce_gradients."""
    optimizer, stage = engine.optimizer, engine.zero_optimization_stage()
    wrapped = optimizer.step if stage == 0 else optimizer.reduce_gradients

    @functools.wraps(wrapped)
    def preconditioned(*args, **kwargs):
        if stage == 1:
            preconditioner.average_gradients()
        preconditioner.step(engine.get_lr()[0])
        return wrapped(*args, **kwargs)
    setattr(optimizer, "step" if stage == 0 else "reduce_gradients", preconditioned)


# The optimizer states of a layout-free checkpoint (checkpointing/native_states.py, universal.py)

def optimizer_file_records():
    """The DeepSpeed classes an optimizer file pickles besides tensors and plain values (the ZeRO stage,
    the loss scaler, fragment addresses): allowed, with nothing else, when reading it weights_only."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address
    return [ZeroStageEnum, LossScaler, DynamicLossScaler, fragment_address]


def fp32_masters(engine):
    """{model parameter: its fp32 copy} where the optimizer keeps one beside the module (DeepSpeed's
    fp16/bf16 optimizers at ZeRO-0: fp16_groups, fp32_groups); ZeRO's copies are reached through the
    fragment API."""
    optimizer = engine.optimizer
    if hasattr(optimizer, "fp16_groups") and hasattr(optimizer, "fp32_groups"):
        return {low: high for lows, highs in zip(optimizer.fp16_groups, optimizer.fp32_groups)
                for low, high in zip(lows, highs)}
    return {}


def base_optimizer(engine):
    """The torch optimizer under DeepSpeed's wrapper (its .optimizer), or the engine's own."""
    return getattr(engine.optimizer, "optimizer", engine.optimizer)


def ensure_optimizer_states(engine, keys):
    """Torch's optimizers, and through them DeepSpeed's ZeRO and bf16 ones, create their states at the
    first step: a resume creates them (zeros, filled next) and links ZeRO-1/2's fragments to them.
    Reaches: ZeRO-3's fp32_partitioned_groups_flat (handed to the torch optimizer only while it steps),
    ZeRO-1/2's _lazy_init_hp_params_optimizer_state."""
    base = base_optimizer(engine)
    stepped = getattr(engine.optimizer, "fp32_partitioned_groups_flat", None) or [
        param for group in base.param_groups for param in group["params"]]
    for param in stepped:
        state = base.state[param]
        for key in keys:
            state.setdefault(key, torch.zeros_like(param))
        state.setdefault("step", torch.tensor(0.0))
    link = getattr(engine.optimizer, "_lazy_init_hp_params_optimizer_state", None)
    if link is not None:
        link()


def set_parameter_states(engine, param, weight, moments, masters):
    """Weight, fp32 master and moments ({state name: tensor}) of one parameter from its full (this tensor
    rank's) values. Reaches: ZeRO-3's ds_id, ds_tensor, ds_process_group; ZeRO-1/2's _hp_mapping."""
    if hasattr(param, "ds_id"):  # ZeRO-3: this rank holds one piece of each
        group = param.ds_process_group
        piece = param.ds_tensor.numel()
        rank = dist.get_rank(group=group)

        def local(tensor):
            flat = tensor.flatten()
            padded = F.pad(flat, (0, piece * dist.get_world_size(group=group) - flat.numel()))
            return padded.narrow(0, piece * rank, piece)
        param.ds_tensor.data.copy_(local(weight))
        safe_set_local_fp32_param(param, local(weight))
        for key, value in moments.items():
            safe_set_local_optimizer_state(param, local(value), key)
    elif hasattr(param, "_hp_mapping"):  # ZeRO-1/2, DeepSpeed's bf16 optimizer
        param.data.copy_(weight)
        safe_set_full_fp32_param(param, weight)
        for key, value in moments.items():
            safe_set_full_optimizer_state(param, value, key)
    else:  # the torch optimizer steps the parameter itself, or its fp32 copy
        master = masters.get(param, param)
        param.data.copy_(weight)
        master.data.copy_(weight)
        base_optimizer(engine).state[master].update(
            {key: value.to(master.device).clone() for key, value in moments.items()})


def set_training_position(engine, optimizer_step, global_steps, global_samples, skipped_steps):
    """Every optimizer state's step count (bias correction continues where it was) and the engine's
    counters (global_steps, global_samples, skipped_steps)."""
    for state in base_optimizer(engine).state.values():
        previous = state.get("step")
        state["step"] = torch.full_like(previous, optimizer_step) if torch.is_tensor(previous) else (
            torch.tensor(float(optimizer_step)) if previous is None else optimizer_step)
    engine.global_steps, engine.global_samples, engine.skipped_steps = global_steps, global_samples, skipped_steps
