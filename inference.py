"""A trained GPT-2 ready for evaluation and generation, shared by scripts/run_gpt2_eval.py and
generate_samples.py.

The checkpoint is one that training wrote (any ZeRO stage, tensor-parallel size or pipeline stages)
or one that scripts/convert_checkpoint.py wrote. The model's shape and its tokenizer come from the
flags saved in the checkpoint; flags given on the command line override them. The weights are merged
over the saved shards and split again for this run's --model-parallel-size, so any saved layout
loads at any tensor-parallel size (a checkpoint saved at this size without ZeRO-3 or pipeline stages
is read one file per rank); evaluation and generation run without pipeline stages. A mixture-of-experts
checkpoint, at whatever expert-parallel size it trained, is read with all its experts on every process
(expert-parallel size 1: no all-to-all, so its processes evaluate independently, as dense ones do), and
every token reaches its experts (model.moe.route_every_token).
"""


import os

import torch
from deepspeed.accelerator import get_accelerator

import mpu
from checkpointing import read_shard
from checkpointing.files import read_experts
from data_utils.hf_tokenizer import folder_tokenizer_flags
from data_utils.tokenization import make_tokenizer_from_args
from initialize import UsageError, initialize_distributed, print_rank_0, set_random_seed
from model import GPT2Model
from model.architecture import ARCHITECTURE_FLAGS, architecture_from_args, parse_moe_layers
from model.hf_folder import is_hf_folder, state_from_hf
from model.moe import route_every_token
from model.tensor_parallel_state import split_state

SHAPE_FLAGS = ("num_layers", "hidden_size", "num_attention_heads", "ffn_hidden_size", "max_position_embeddings",
               "layernorm_epsilon")
TOKENIZER_FLAGS = ("tokenizer_type", "vocab_file", "merge_file", "tokenizer_path", "tokenizer_model_type",
                   "make_vocab_size_divisible_by")


def _take_saved_flags(args, saved):
    """The checkpoint's shape and tokenizer; a shape flag given that contradicts it is an error (its
    weights would not load, or, for the heads, would load and compute something else)."""
    for name in SHAPE_FLAGS:
        given, held = getattr(args, name), saved.get(name)
        if name in args.explicit and held is not None and given != held and name != "layernorm_epsilon":
            raise UsageError(f"--{name.replace('_', '-')} {given} but the checkpoint at {args.load} has {held}: "
                             "drop the flag (the shape is read from the checkpoint) or load the checkpoint it "
                             "describes")
    for name in SHAPE_FLAGS + TOKENIZER_FLAGS + ARCHITECTURE_FLAGS:
        if name not in args.explicit and name in saved:
            setattr(args, name, saved[name])
    if "seq_length" not in args.explicit:
        args.seq_length = args.max_position_embeddings
    if args.seq_length > args.max_position_embeddings:
        raise UsageError(f"--seq-length {args.seq_length} is longer than the model's {args.max_position_embeddings} "
                         "positions: choose a shorter --seq-length")
    if args.hidden_size % args.num_attention_heads or args.num_attention_heads % args.model_parallel_size:
        raise UsageError(f"{args.num_attention_heads} attention heads (hidden size {args.hidden_size}) do not split "
                         f"over --model-parallel-size {args.model_parallel_size}")


def _dtype(args):
    if args.fp16 and get_accelerator().device_name() == "cpu":
        raise UsageError("--fp16 needs a GPU; on CPU use --bf16")
    return torch.float16 if args.fp16 else torch.bfloat16 if args.bf16 else torch.float32


def _read_weights(args, rank, tensor_parallel):
    """(this rank's state dict, the saved flags, tag) of --load: a checkpoint, or a transformers folder
    converted in memory, with its own tokenizer (data_utils.hf_tokenizer.folder_tokenizer_flags)."""
    if not is_hf_folder(args.load):
        state, saved, tag = read_shard(args.load, rank, tensor_parallel)
        if (saved.get("num_experts") or 1) > 1:
            moe_layers = len(parse_moe_layers(saved["moe_layers"], saved["num_layers"]))
            state.update(read_experts(os.path.join(args.load, tag), moe_layers, saved["num_experts"]))
        return state, saved, tag
    state, saved, config = state_from_hf(args.load, tensor_parallel, args.make_vocab_size_divisible_by)
    saved.update(folder_tokenizer_flags(args.load, config))
    return split_state(state, tensor_parallel)[rank], saved, "transformers"


def load_gpt2(args):
    """Start torch.distributed and mpu, then (model in eval mode on this rank's device with logits
    gathered over the tensor-parallel group, tokenizer). Needs --load (a checkpoint directory or a
    transformers GPT-2 folder)."""
    if not args.load:
        raise UsageError("--load CKPT_DIR is required: a checkpoint directory written by training or by "
                         "scripts/convert_checkpoint.py, or a transformers GPT-2 folder")
    if args.pipe_parallel_size != 1:
        raise UsageError("--pipe-parallel-size: evaluation and generation run the whole model on each "
                         "tensor-parallel group; use --model-parallel-size (any checkpoint layout loads)")
    initialize_distributed(args)
    set_random_seed(args.seed)
    tensor_parallel = mpu.get_model_parallel_world_size()
    state, saved, tag = _read_weights(args, mpu.get_model_parallel_rank(), tensor_parallel)
    if "tokentype_embeddings" in state:
        raise UsageError(f"--load {args.load}: a BERT checkpoint; evaluation and generation take GPT-2")
    _take_saved_flags(args, saved)
    if args.num_experts > 1 and args.moe_expert_parallel_size != 1:
        if "moe_expert_parallel_size" in args.explicit:
            raise UsageError(f"--moe-expert-parallel-size {args.moe_expert_parallel_size}: evaluation and generation "
                             "hold every expert on each process (expert-parallel size 1); drop the flag")
        args.moe_expert_parallel_size = 1
    tokenizer = make_tokenizer_from_args(args, model_parallel_size=tensor_parallel)
    rows = state["word_embeddings.weight"].size(0) * tensor_parallel  # the padded vocabulary
    if tokenizer.vocab_size > rows:
        raise UsageError(f"--load {args.load}: the model embeds {rows} tokens but the tokenizer "
                         f"({tokenizer.name}) has {tokenizer.vocab_size}: pass the tokenizer it was trained with")
    model = GPT2Model(num_layers=args.num_layers, vocab_size=rows, hidden_size=args.hidden_size,
                      num_attention_heads=args.num_attention_heads, max_sequence_length=args.max_position_embeddings,
                      embedding_dropout=0.0, attention_dropout=0.0, hidden_dropout=0.0,
                      layernorm_epsilon=args.layernorm_epsilon, ffn_hidden_size=args.ffn_hidden_size,
                      architecture=architecture_from_args(args), parallel_output=False)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        detail = str(error).strip().splitlines()[-1].strip()
        raise UsageError(f"--load {args.load}: the weights do not fit the model the flags describe "
                         f"(a shape flag that contradicts the checkpoint?): {detail}") from None
    route_every_token(model)
    model = model.to(device=get_accelerator().current_device_name(), dtype=_dtype(args)).eval()
    print_rank_0(f"> loaded {args.load}/{tag}: {args.num_layers} layers, hidden {args.hidden_size}, "
                 f"{args.num_attention_heads} heads, {args.max_position_embeddings} positions, "
                 f"{tokenizer.name} ({tokenizer.vocab_size} tokens), tensor parallel {tensor_parallel}"
                 + (f", {args.num_experts} experts per MoE layer, all on each process" if args.num_experts > 1 else ""))
    return model, tokenizer
