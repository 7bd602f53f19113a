"""The layout-free ("universal") form of a checkpoint, and resuming from it at any layout.

TAG/universal/ holds one file per parameter, named by its GPT2Model / BertModel name, with its full
(tensor-parallel merged, unpartitioned) fp32 master weight and optimizer moments, and last
`training_state.pt` (iteration, consumed samples, optimizer step, schedule, flags): a folder without
it is incomplete. Any run can resume from it: each rank reads only the parameters it holds, cuts its
tensor-parallel part (model/tensor_parallel_state.py) and hands weights and moments to whatever
optimizer its ZeRO stage and precision built, through DeepSpeed's fragment API. Vocabulary rows
padded for another tensor-parallel size are dropped or added (zeros, moments too).
"""

import os

import torch
import torch.distributed as dist
import torch.nn.functional as F
from deepspeed.utils import (safe_set_full_fp32_param, safe_set_full_optimizer_state, safe_set_local_fp32_param,
                             safe_set_local_optimizer_state)

import mpu
from model.gpt2_pipeline import gpt2_name_of_pipeline_parameter
from model.tensor_parallel_state import is_vocabulary, shard_of

from .files import TRAINING_STATE, load_plain
from .native_states import WEIGHT, read_native_states
from .tags import torch_save_atomically

def write_universal(tag_folder, folder):
    """The layout-free form of the native tag at tag_folder, written into `folder`; returns the
    training state."""
    states, step, client = read_native_states(tag_folder)
    args = client.get("args", {})
    if args.get("num_experts", 1) > 1:
        raise ValueError("mixture-of-experts checkpoints change layout only at their own expert-parallel size: "
                         "resume it at the layout it was saved with")
    os.makedirs(folder, exist_ok=True)
    for name, state in states.items():
        torch_save_atomically({key: tensor.clone() for key, tensor in state.items()}, os.path.join(folder, f"{name}.pt"))
    schedule = client.get("lr_scheduler") or {}
    training_state = {"iteration": client.get("iteration", 0), "consumed_samples": client.get("consumed_samples", 0),
                      "optimizer_step": step, "scheduler_steps": schedule.get("last_epoch", step),
                      "global_steps": client.get("global_steps", 0), "global_samples": client.get("global_samples", 0),
                      "skipped_steps": client.get("skipped_steps", 0), "args": args, "parameters": sorted(states),
                      "moments": sorted(next(iter(states.values())))}
    torch_save_atomically(training_state, os.path.join(folder, TRAINING_STATE))
    return training_state


def _fit_vocabulary(name, tensor, rows):
    """A vocabulary tensor with `rows` rows: padding rows dropped, or zero rows added."""
    if not is_vocabulary(name) or tensor.size(0) == rows:
        return tensor
    if tensor.size(0) > rows:
        return tensor[:rows]
    return torch.cat([tensor, tensor.new_zeros(rows - tensor.size(0), *tensor.shape[1:])])


def _fp32_masters(engine):
    """{model parameter: its fp32 copy} where the optimizer keeps one beside the module (DeepSpeed's
    fp16/bf16 optimizers at ZeRO-0); ZeRO's copies are reached through the fragment API."""
    optimizer = engine.optimizer
    if hasattr(optimizer, "fp16_groups") and hasattr(optimizer, "fp32_groups"):
        return {lp: hp for lows, highs in zip(optimizer.fp16_groups, optimizer.fp32_groups) for lp, hp in zip(lows, highs)}
    return {}


def _base_optimizer(engine):
    return getattr(engine.optimizer, "optimizer", engine.optimizer)


def _ensure_optimizer_states(engine, keys):
    """Torch's optimizers, and through them DeepSpeed's ZeRO and bf16 ones, create their states at the
    first step: a resume creates them (zeros, filled next) and links ZeRO-1/2's fragments to them."""
    base = _base_optimizer(engine)
    # ZeRO-3 hands its flat fp32 partitions to the torch optimizer only while it steps
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


def _set_parameter(engine, param, values, masters):
    """Weight, fp32 master and moments of one parameter from its full (this tensor rank's) values."""
    moments = {key: value for key, value in values.items() if key != WEIGHT}
    if hasattr(param, "ds_id"):  # ZeRO-3: this rank holds one piece of each
        group = param.ds_process_group
        piece = param.ds_tensor.numel()
        rank = dist.get_rank(group=group)

        def local(tensor):
            flat = tensor.flatten()
            return F.pad(flat, (0, piece * dist.get_world_size(group=group) - flat.numel())).narrow(0, piece * rank, piece)
        param.ds_tensor.data.copy_(local(values[WEIGHT]))
        safe_set_local_fp32_param(param, local(values[WEIGHT]))
        for key, value in moments.items():
            safe_set_local_optimizer_state(param, local(value), key)
    elif hasattr(param, "_hp_mapping"):  # ZeRO-1/2, DeepSpeed's bf16 optimizer
        param.data.copy_(values[WEIGHT])
        safe_set_full_fp32_param(param, values[WEIGHT])
        for key, value in moments.items():
            safe_set_full_optimizer_state(param, value, key)
    else:  # the torch optimizer steps the parameter itself, or its fp32 copy
        master = masters.get(param, param)
        param.data.copy_(values[WEIGHT])
        master.data.copy_(values[WEIGHT])
        _base_optimizer(engine).state[master].update({key: value.to(master.device).clone() for key, value in moments.items()})


def _set_step(engine, step):
    """Every optimizer state's step count (bias correction continues where it was)."""
    for state in _base_optimizer(engine).state.values():
        previous = state.get("step")
        state["step"] = torch.full_like(previous, step) if torch.is_tensor(previous) else (
            torch.tensor(float(step)) if previous is None else step)


def load_universal(engine, args, folder, with_optimizer=True):
    """Resume this rank's engine from a layout-free checkpoint folder (without the optimizer's states:
    the weights only); returns its training state."""
    training_state = load_plain(os.path.join(folder, TRAINING_STATE))
    tensor_parallel, tensor_rank = mpu.get_model_parallel_world_size(), mpu.get_model_parallel_rank()
    pipelined = args.pipe_parallel_size > 1
    masters = _fp32_masters(engine)
    if with_optimizer:
        _ensure_optimizer_states(engine, [key for key in training_state["moments"] if key != WEIGHT])
    for name, param in engine.module.named_parameters():
        canonical = gpt2_name_of_pipeline_parameter(name, args.num_layers) if pipelined else name
        path = os.path.join(folder, f"{canonical}.pt")
        if not os.path.isfile(path):
            raise ValueError(f"{folder} has no {canonical}: it is a checkpoint of another model (--num-layers, "
                             "--position-embedding-type, --untie-embeddings, ... as it was trained)")
        shape = tuple(getattr(param, "ds_shape", param.shape))
        values = {}
        for key, full in load_plain(path).items():
            if key != WEIGHT and not with_optimizer:
                continue
            full = _fit_vocabulary(canonical, full, shape[0] * tensor_parallel)
            values[key] = shard_of(canonical, full, tensor_parallel, tensor_rank).to(torch.float32)
            if tuple(values[key].shape) != shape:
                raise ValueError(f"{canonical} is {tuple(full.shape)} in {folder}, which does not fit this model's "
                                 f"{shape} x {tensor_parallel} tensor-parallel ranks: give the shape flags it was "
                                 "trained with (--hidden-size, --num-attention-heads, --ffn-hidden-size, ...)")
        _set_parameter(engine, param, values, masters)
    if not with_optimizer:
        return training_state
    _set_step(engine, training_state["optimizer_step"])
    engine.global_steps = training_state["global_steps"]
    engine.global_samples = training_state["global_samples"]
    engine.skipped_steps = training_state["skipped_steps"]
    return training_state
