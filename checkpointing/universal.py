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

import mpu
from deepspeed_internals import (
    ensure_optimizer_states,
    fp32_masters,
    require_written_version,
    set_parameter_states,
    set_training_position,
)
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


def load_universal(engine, args, folder, with_optimizer=True):
    """Resume this rank's engine from a layout-free checkpoint folder (without the optimizer's states:
    the weights only); returns its training state."""
    training_state = load_plain(os.path.join(folder, TRAINING_STATE))
    tensor_parallel, tensor_rank = mpu.get_model_parallel_world_size(), mpu.get_model_parallel_rank()
    pipelined = args.pipe_parallel_size > 1
    require_written_version()
    masters = fp32_masters(engine)
    if with_optimizer:
        ensure_optimizer_states(engine, [key for key in training_state["moments"] if key != WEIGHT])
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
        set_parameter_states(engine, param, values[WEIGHT], {k: v for k, v in values.items() if k != WEIGHT}, masters)
    if not with_optimizer:
        return training_state
    set_training_position(engine, training_state["optimizer_step"], training_state["global_steps"],
                          training_state["global_samples"], training_state["skipped_steps"])
    return training_state
