"""DeepSpeed checkpoint directories read and written without an engine (for converters and evaluation).

Layout, as engine.save_checkpoint writes it: DIR/latest holds the tag; DIR/TAG/mp_rank_XX_model_states.pt
(one per tensor-parallel rank; `zero_pp_rank_D_mp_rank_XX_model_states.pt` under ZeRO-3) holds
{"module": state dict, ..., "args": the run's flags}. A ZeRO-3 checkpoint's module states are
partitioned; they are gathered with DeepSpeed's zero_to_fp32. A pipeline checkpoint has one
mp_rank file per (stage, tensor rank) without the module, and the weights in
DIR/TAG/layer_II-model_XX-model_states.pt, one per pipeline layer and tensor-parallel rank.
"""

import argparse
import os
import pickle
import re
import sys

import numpy as np
import torch
import torch.distributed as dist

from model.gpt2_pipeline import gpt2_state_from_layers
from model.tensor_parallel_state import merge_states, split_state

from .tags import NoCompleteTag, choose_tag, commit, read_latest, torch_save_atomically

_LAYER_FILE = re.compile(r"layer_(\d+)-model_(\d+)-model_states\.pt")
_EXPERT_FILE = re.compile(r"layer_(\d+)_expert_(\d+)_mp_rank_(\d+)_model_states\.pt")
UNIVERSAL = "universal"  # a tag's layout-free form (universal.py): one file per parameter,
TRAINING_STATE = "training_state.pt"  # and this one, written last


# Besides tensors and plain values: Megatron-LM's argparse.Namespace of flags, and numpy arrays (random
# states in checkpoints of earlier versions). None of them runs code when loaded.
_PLAIN_TYPES = [argparse.Namespace, np._core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def load_plain(path):
    """A torch file of tensors and plain values (torch.load with weights_only=True: nothing in it can run
    code)."""
    with torch.serialization.safe_globals(_PLAIN_TYPES):
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            raise ValueError(f"{path}: holds objects other than tensors and plain values, which are not loaded "
                             f"here ({str(error).splitlines()[-1][:200]})") from None


def complete_tag(directory, tag=None):
    """The tag to read from a checkpoint directory, verified as training verifies it: `tag` if given,
    else the one `latest` names, else the newest complete one before it (one line on stderr says which
    was passed over and why). One-line errors: no `latest`, or no complete tag."""
    if tag is None and read_latest(directory) is None:
        raise FileNotFoundError(f"{directory}: no 'latest' file; is it a checkpoint directory written by --save?")
    try:
        chosen, passed_over = choose_tag(directory, tag, 1)
    except NoCompleteTag as error:
        raise ValueError(f"{directory}: {error}") from None
    if passed_over and (not dist.is_initialized() or dist.get_rank() == 0):
        print(f"warning: {directory}: {passed_over[0]}; reading {chosen}, the newest complete checkpoint",
              file=sys.stderr, flush=True)
    return chosen


def has_model_files(folder):
    return any(re.fullmatch(r"(?:zero_pp_rank_\d+_)?mp_rank_\d+_model_states\.pt", name) for name in os.listdir(folder))


def model_files(folder):
    """The model-states file of each tensor-parallel rank in a tag folder, in rank order."""
    by_rank = {}
    for name in os.listdir(folder):
        match = re.fullmatch(r"(?:zero_pp_rank_(\d+)_)?mp_rank_(\d+)_model_states\.pt", name)
        if match and int(match.group(1) or 0) == 0:
            by_rank[int(match.group(2))] = os.path.join(folder, name)
    if not by_rank:
        raise FileNotFoundError(f"{folder}: no mp_rank_XX_model_states.pt files")
    return [by_rank[rank] for rank in sorted(by_rank)]


def layer_files(folder):
    """{tensor-parallel rank: {pipeline layer index: path}} of a pipeline checkpoint; {} for another."""
    files = {}
    for name in os.listdir(folder):
        match = _LAYER_FILE.fullmatch(name)
        if match:
            files.setdefault(int(match.group(2)), {})[int(match.group(1))] = os.path.join(folder, name)
    return files


def read_experts(folder, moe_layers, num_experts):
    """The mixture-of-experts weights of a tag folder as one process holds them (expert-parallel size 1).
    DeepSpeed writes each expert to its own file, layer_L_expert_E_mp_rank_00_model_states.pt, its
    parameters named by the expert's global number whatever expert-parallel size trained it, so the union
    of the files is every expert at size 1. A missing expert file is an error naming the count."""
    state, found = {}, 0
    for name in sorted(os.listdir(folder)):
        if _EXPERT_FILE.fullmatch(name):
            state.update(load_plain(os.path.join(folder, name)))
            found += 1
    if found != moe_layers * num_experts:
        raise ValueError(f"{folder}: {found} expert files where {moe_layers} MoE layers x {num_experts} experts were "
                         "saved; the checkpoint is incomplete (copy every layer_*_expert_* file)")
    return state


def checkpoint_layout(folder):
    """(tensor-parallel size, pipeline stages) that a tag folder was saved with."""
    ranks, layers = len(model_files(folder)), layer_files(folder)
    return (len(layers), ranks // len(layers)) if layers else (ranks, 1)


def universal_folder(tag_folder):
    return os.path.join(tag_folder, UNIVERSAL)


def is_complete(folder):
    """Whether a layout-free folder was written whole."""
    return os.path.isfile(os.path.join(folder, TRAINING_STATE))


def _read_universal_weights(folder):
    """(fp32 state dict, args) of a layout-free folder."""
    training_state = load_plain(os.path.join(folder, TRAINING_STATE))
    return ({name: load_plain(os.path.join(folder, f"{name}.pt"))["fp32"] for name in training_state["parameters"]},
            training_state["args"])


def read_checkpoint(directory, tag=None):
    """(full state dict merged over tensor-parallel ranks, the run's args dict, tag)."""
    return _read_merged(directory, complete_tag(directory, tag))


def _read_merged(directory, tag):
    """read_checkpoint of a tag already verified."""
    folder = os.path.join(directory, tag)
    if not has_model_files(folder) and is_complete(universal_folder(folder)):
        return (*_read_universal_weights(universal_folder(folder)), tag)
    files = model_files(folder)
    states = [load_plain(path) for path in files]
    args = states[0].get("args", {})
    pipeline = layer_files(os.path.join(directory, tag))
    if pipeline:
        return merge_states([gpt2_state_from_layers({index: load_plain(path)
                                                     for index, path in pipeline[rank].items()}, args["num_layers"])
                             for rank in sorted(pipeline)]), args, tag
    if args.get("zero_stage_of_run") == 3 or not states[0]["module"]:
        if len(files) > 1:
            raise ValueError(f"{directory}/{tag}: ZeRO-3 with tensor parallelism cannot be read here yet")
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
        return get_fp32_state_dict_from_zero_checkpoint(directory, tag), args, tag
    return merge_states([s["module"] for s in states]), args, tag


def read_shard(directory, rank, world_size, tag=None):
    """(the state dict of tensor-parallel rank `rank` in a run of world_size ranks, the saved run's args,
    tag). A checkpoint saved at world_size ranks without ZeRO-3 or pipeline stages is read from this
    rank's file alone; any other is merged (read_checkpoint), its vocabulary padded with zero rows to a
    multiple of world_size, and split again."""
    tag = complete_tag(directory, tag)
    folder = os.path.join(directory, tag)
    if has_model_files(folder) and checkpoint_layout(folder) == (world_size, 1):
        saved = load_plain(model_files(folder)[rank])
        if saved["module"] and saved.get("args", {}).get("zero_stage_of_run") != 3:
            return saved["module"], saved.get("args", {}), tag
    state, args, tag = _read_merged(directory, tag)  # verified above: its files are not read twice
    words = state["word_embeddings.weight"]
    extra = -words.size(0) % world_size
    state["word_embeddings.weight"] = torch.cat([words, words.new_zeros(extra, words.size(1))])
    return split_state(state, world_size)[rank], args, tag


def write_checkpoint(directory, shards, args, tag="global_step0"):
    """One model-states file per tensor-parallel shard, loadable with --load (and --finetune), committed
    as training commits (tags.py): a crash leaves no `latest` naming a half-written tag."""
    folder = os.path.join(directory, tag)
    os.makedirs(folder, exist_ok=True)
    for rank, shard in enumerate(shards):
        torch_save_atomically({"module": shard, "dp_world_size": 1, "mp_world_size": len(shards), "global_steps": 0,
                               "skipped_steps": 0, "iteration": 0, "consumed_samples": 0,
                               "args": {**args, "model_parallel_size": len(shards)}},
                              os.path.join(folder, f"mp_rank_{rank:02d}_model_states.pt"))
    commit(directory, tag, 0, {"tensor_parallel": len(shards), "pipeline_parallel": 1, "data_parallel": 1,
                               "zero_stage": 0})
