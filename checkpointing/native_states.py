"""Every parameter's full training state (fp32 master weight and optimizer moments, merged over the
data-parallel partitions, tensor-parallel ranks and pipeline stages) read from a tag folder as
DeepSpeed wrote it at any layout, without an engine.

Where each thing lies, by the optimizer the run had (one model-parallel rank XX = stage x TP + tensor
rank; pipeline parameter names are turned into GPT2Model's):
- ZeRO-1/2 and DeepSpeed's bf16 optimizer: `(bf16_)zero_pp_rank_D_mp_rank_XX_optim_states.pt`, one flat
  fp32 partition per parameter group and data-parallel rank D, moments alike; `param_slice_mappings`
  names where each parameter's piece lies in it (pieces in rank order make the parameter).
- ZeRO-3: the same files, each parameter cut into data-parallel pieces of ceil(numel / D) in the order
  of `param_shapes` (in `zero_pp_rank_0_mp_rank_XX_model_states.pt`), the last one padded.
- ZeRO-0: the torch optimizer's state dict in `mp_rank_XX_model_states.pt` (with fp32 copies in
  `fp32_groups` under bf16), its parameters by position; their names are in the client state that
  checkpointing.save_checkpoint adds (`optimizer_parameter_names`).
"""

import math
import os
import re

import torch

from deepspeed_internals import optimizer_file_records
from model.gpt2_pipeline import gpt2_name_of_pipeline_parameter, gpt2_state_from_layers
from model.tensor_parallel_state import merge_states

from .files import layer_files, load_plain, model_files

WEIGHT = "fp32"  # the key of the master weight among a parameter's states


def _load_optimizer_file(path):
    """A DeepSpeed optimizer file: tensors, plain values and DeepSpeed's records (nothing that runs code)."""
    with torch.serialization.safe_globals(optimizer_file_records()):
        return torch.load(path, map_location="cpu", weights_only=True)


def _optimizer_files(folder, model_rank):
    """The optimizer files of one model-parallel rank, in data-parallel rank order."""
    pattern = re.compile(rf"(?:bf16_)?zero_pp_rank_(\d+)_mp_rank_{model_rank:02d}_optim_states\.pt")
    found = {int(m.group(1)): os.path.join(folder, name) for name in os.listdir(folder) if (m := pattern.fullmatch(name))}
    return [found[rank] for rank in sorted(found)]


def _check_shaped_like(name, key, tensor, numel):
    if tensor.numel() != numel:
        raise ValueError(f"optimizer state '{key}' of {name} is not shaped like the parameter ({tensor.numel()} "
                         f"values for {numel}; factored moments such as Adafactor's do not reshape): resume it "
                         "at the layout it was saved with")


def _moment_keys(state):
    return [key for key, value in state.items() if torch.is_tensor(value) and value.dim() > 0]


def _zero12_states(files, shapes):
    """{name: {key: full flat tensor}} of a ZeRO-1/2 (or bf16 optimizer) model-parallel rank."""
    ranks = [_load_optimizer_file(path)["optimizer_state_dict"] for path in files]
    states = {}
    for group, group_shapes in enumerate(shapes):
        flats = [(rank["single_partition_of_fp32_groups"][group], rank["base_optimizer_state"]["state"][group])
                 for rank in ranks]
        keys = _moment_keys(flats[0][1])
        for name in group_shapes:
            pieces = [(rank["param_slice_mappings"][group][name], flat, state)
                      for rank, (flat, state) in zip(ranks, flats) if name in rank["param_slice_mappings"][group]]
            states[name] = {key: torch.cat([(flat if key == WEIGHT else state[key]).narrow(0, at.start, at.numel)
                                            for at, flat, state in pieces]).view(group_shapes[name])
                            for key in (WEIGHT, *keys)}
    return states, _step(ranks[0]["base_optimizer_state"]["state"])


def _zero3_states(files, shapes):
    """{name: {key: full flat tensor}} of a ZeRO-3 model-parallel rank (sub-groups concatenated per rank)."""
    ranks = [_load_optimizer_file(path)["optimizer_state_dict"] for path in files]
    keys = _moment_keys(ranks[0]["optimizer_state_dict"]["state"][0])

    def flat(rank, key):
        if key == WEIGHT:
            return torch.cat(rank["fp32_flat_groups"])
        sub_groups = rank["optimizer_state_dict"]["state"]
        return torch.cat([sub_groups[index][key] for index in sorted(sub_groups)])
    flats = {key: [flat(rank, key) for rank in ranks] for key in (WEIGHT, *keys)}
    states, offset = {}, 0
    for group_shapes in shapes:
        for name, shape in group_shapes.items():
            numel = math.prod(shape)
            piece = math.ceil(numel / len(ranks))
            states[name] = {key: torch.cat([f.narrow(0, offset, piece) for f in per_rank])[:numel].view(shape)
                            for key, per_rank in flats.items()}
            offset += piece
    return states, _step(ranks[0]["optimizer_state_dict"]["state"])


def _zero0_states(saved, weights, canonical):
    """{name: {key: tensor}} of a ZeRO-0 model-parallel rank from its torch optimizer state dict
    (weights and the result by GPT2Model name: canonical(module name))."""
    optimizer = saved["optimizer"]
    names = saved.get("optimizer_parameter_names")
    if names is None:
        raise ValueError("it has no 'optimizer_parameter_names' (saved by a version before layout changes were "
                         "possible): resume it at the layout it was saved with")
    torch_state = optimizer.get("optimizer_state_dict", optimizer)
    masters = [t for group in optimizer.get("fp32_groups", []) for t in group]
    states = {}
    for position, name in enumerate(canonical(n) for group in names for n in group):
        state = torch_state["state"].get(position, {})
        weight = masters[position] if masters else weights[name]
        for key in _moment_keys(state):
            _check_shaped_like(name, key, state[key], weight.numel())
        states[name] = {WEIGHT: weight.float(), **{key: state[key].view(weight.shape) for key in _moment_keys(state)}}
    return states, _step(torch_state["state"])


def _step(states):
    """The optimizer's step count (every parameter's state holds the same)."""
    for state in states.values():
        if "step" in state:
            return int(state["step"])
    return 0


def _stage_weights(folder, saved, tensor_rank, args):
    """This tensor rank's weights by name: the module's, or the pipeline layer files'."""
    layers = layer_files(folder)
    if layers:
        return gpt2_state_from_layers({index: load_plain(path) for index, path in layers[tensor_rank].items()},
                                      args["num_layers"])
    return saved["module"]


def read_native_states(folder):
    """({GPT2Model or BertModel parameter name: {"fp32": full tensor, "exp_avg": ..., ...}}, the optimizer
    step, the client state of model-parallel rank 0) from a tag folder at any layout. Vocabulary
    tensors keep the saved run's padded rows."""
    files = model_files(folder)
    first = load_plain(files[0])
    args = first.get("args", {})
    tensor_parallel = args.get("model_parallel_size", 1)
    if args.get("pipe_parallel_size", 1) > 1:
        def canonical(name):
            return gpt2_name_of_pipeline_parameter(name, args["num_layers"])
    else:
        def canonical(name):
            return name
    by_tensor_rank, step, weights = [{} for _ in range(tensor_parallel)], 0, {}
    for model_rank, path in enumerate(files):
        saved = first if model_rank == 0 else load_plain(path)
        tensor_rank = model_rank % tensor_parallel
        optimizer_files = _optimizer_files(folder, model_rank)
        if optimizer_files:
            shapes_file = path if saved.get("param_shapes") else os.path.join(
                folder, f"zero_pp_rank_0_mp_rank_{model_rank:02d}_model_states.pt")
            shapes = load_plain(shapes_file)["param_shapes"]
            zero_stage = int(_load_optimizer_file(optimizer_files[0])["optimizer_state_dict"].get("zero_stage", 1))
            read = _zero3_states if zero_stage == 3 else _zero12_states
            states, step = read(optimizer_files, shapes)
            states = {canonical(name): state for name, state in states.items()}
        elif saved.get("optimizer"):
            if tensor_rank not in weights:  # a pipeline's layer files hold every stage: read once per tensor rank
                weights[tensor_rank] = _stage_weights(folder, saved, tensor_rank, args)
            states, step = _zero0_states(saved, weights[tensor_rank], canonical)
        else:
            raise ValueError(f"{path}: no optimizer states in it or beside it")
        for name, state in states.items():
            by_tensor_rank[tensor_rank].setdefault(name, state)  # a tied weight: the same on every stage
    return _merged(by_tensor_rank), step, first


def _merged(by_tensor_rank):
    """The states of every tensor-parallel rank merged into full tensors."""
    keys = by_tensor_rank[0][next(iter(by_tensor_rank[0]))].keys()
    merged = {}
    for key in keys:
        full = merge_states([{name: states[key] for name, states in rank_states.items()} for rank_states in by_tensor_rank])
        for name, tensor in full.items():
            merged.setdefault(name, {})[key] = tensor
    return merged

