"""Convert between a checkpoint here and a Hugging Face transformers directory (BERT, GPT-2, GPT-Neo,
GPT-NeoX), or a checkpoint into its layout-free form, to resume at another parallel layout.

    python scripts/convert_checkpoint.py --from-hf HF_DIR --save CKPT_DIR [--model-parallel-size N]
    python scripts/convert_checkpoint.py --load CKPT_DIR --to-hf HF_DIR
    python scripts/convert_checkpoint.py --load CKPT_DIR --save CKPT_DIR2 [--model-parallel-size N]
        [--pipe-parallel-size M] [--load-tag TAG]

--load --save writes the tag (default: the one `latest` names) of a checkpoint saved at any layout
(TP x PP x DP, ZeRO 0-3, fp32/bf16) as its layout-free form (checkpointing/universal.py): model, fp32
master weights, optimizer moments, schedule, iteration and consumed samples, one file per parameter.
A run at any layout resumes from it with --load CKPT_DIR2; --model-parallel-size / --pipe-parallel-size
only check that the model splits that way. (A resume at another layout converts in place by itself:
this is for doing it ahead, or into another folder.)

--from-hf reads a GPT2LMHeadModel, GPTNeoForCausalLM, GPTNeoXForCausalLM, or a BertForPreTraining (or
encoder-only BertModel: its pooler and pretraining heads are then freshly initialised, and said so),
from config.json + model.safetensors (or pytorch_model.bin), splits it into N tensor-parallel shards
and writes a checkpoint (with the architecture flags it needs) that `--load CKPT_DIR --finetune` starts
from. --to-hf merges the shards of any tensor-parallel size and any number of pipeline stages (ZeRO-3
checkpoints included) and writes config.json, model.safetensors and the tokenizer's files for the
transformers model that has the checkpoint's architecture (transformers_family).
"""

import argparse
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from arguments import ArgumentParser, add_architecture_args, saved_tokenizer  # noqa: E402
from checkpointing import read_checkpoint, write_checkpoint  # noqa: E402
from checkpointing.files import complete_tag, universal_folder  # noqa: E402
from checkpointing.tags import commit  # noqa: E402
from checkpointing.universal import write_universal  # noqa: E402
from data_utils.hf_tokenizer import folder_tokenizer_flags, save_for_transformers  # noqa: E402
from model.architecture import GLU_ACTIVATIONS, architecture_from_args  # noqa: E402
from model.bert_conversion import hf_from_bert  # noqa: E402
from model.gpt2_conversion import hf_from_gpt2  # noqa: E402
from model.hf_folder import state_from_hf  # noqa: E402
from model.neo_conversion import hf_from_gpt_neo, hf_from_gpt_neox  # noqa: E402
from model.tensor_parallel_state import split_state  # noqa: E402


def from_hf(hf_dir, save_dir, model_parallel_size, divisible_by):
    state, args, config = state_from_hf(hf_dir, model_parallel_size, divisible_by)
    vocab, padded = args["text_vocab_size"], args["padded_vocab_size"]
    save_dir = os.path.abspath(save_dir)  # the tokenizer paths recorded below must not depend on the cwd
    tokenizer = folder_tokenizer_flags(hf_dir, config)
    os.makedirs(save_dir, exist_ok=True)
    for name in TOKENIZER_FILES:
        if os.path.isfile(os.path.join(hf_dir, name)):
            shutil.copy(os.path.join(hf_dir, name), os.path.join(save_dir, name))
    for flag in ("vocab_file", "merge_file"):  # the copies in save_dir
        if tokenizer.get(flag):
            tokenizer[flag] = os.path.join(save_dir, os.path.basename(tokenizer[flag]))
    args.update(tokenizer)
    write_checkpoint(save_dir, split_state(state, model_parallel_size), args)
    print(f"wrote {save_dir} ({model_parallel_size} tensor-parallel shards, vocabulary padded {vocab} -> {padded})")


TOKENIZER_FILES = ("vocab.txt", "vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json")


def _bert_to_hf(state, args):
    from transformers import BertConfig
    layers = args["num_layers"]
    config = BertConfig(vocab_size=args["text_vocab_size"], hidden_size=state["position_embeddings"].size(1),
                        num_hidden_layers=layers, num_attention_heads=args["num_attention_heads"],
                        intermediate_size=state["transformer.layers.0.mlp.dense_h_to_4h.weight"].size(0),
                        max_position_embeddings=state["position_embeddings"].size(0),
                        type_vocab_size=state["tokentype_embeddings"].size(0),
                        layer_norm_eps=args.get("layernorm_epsilon", 1e-12), architectures=["BertForPreTraining"])
    return config, hf_from_bert(state, layers, args["text_vocab_size"])


def _gpt2_to_hf(state, args):
    from transformers import GPT2Config
    layers = args["num_layers"]
    config = GPT2Config(vocab_size=args["text_vocab_size"], n_positions=state["position_embeddings"].size(0),
                        n_embd=state["position_embeddings"].size(1), n_layer=layers,
                        n_head=args["num_attention_heads"], layer_norm_epsilon=args.get("layernorm_epsilon", 1e-5),
                        n_inner=state["transformer.layers.0.mlp.dense_h_to_4h.weight"].size(0),
                        activation_function="gelu_new", architectures=["GPT2LMHeadModel"])
    return config, hf_from_gpt2(state, layers, args["text_vocab_size"])


def _gpt_neo_to_hf(state, args):
    from transformers import GPTNeoConfig
    config, hf_state = hf_from_gpt_neo(state, args, args["text_vocab_size"])
    return GPTNeoConfig(**config), hf_state


def _gpt_neox_to_hf(state, args):
    from transformers import GPTNeoXConfig
    config, hf_state = hf_from_gpt_neox(state, args, args["text_vocab_size"])
    return GPTNeoXConfig(**config), hf_state


def transformers_family(args):
    """gpt2, gpt_neo or gpt_neox: the transformers model that has the architecture of a checkpoint's flags."""
    flags = vars(add_architecture_args(argparse.ArgumentParser()).parse_args([]))
    flags.update({name: args[name] for name in flags if args.get(name) is not None})
    arch = architecture_from_args(argparse.Namespace(**flags, num_layers=args["num_layers"]))
    if arch.num_experts > 1:
        raise ValueError("a mixture-of-experts checkpoint: no transformers model of this family has experts")
    types = set(arch.attention_types)
    plain = arch.normalization == "layernorm" and not arch.rezero and arch.bias and arch.activation not in GLU_ACTIVATIONS
    learned = plain and arch.learned_positions and not arch.untie_embeddings and not arch.parallel_residual
    if learned and arch.scale_attention and arch.qkv_bias and types == {"global"} and arch.activation == "gelu_tanh":
        return "gpt2"
    if learned and not arch.scale_attention and not arch.qkv_bias and types <= {"global", "local"}:
        return "gpt_neo"
    if plain and arch.position_embedding_type == "rotary" and arch.scale_attention and arch.qkv_bias and \
            types == {"global"}:
        return "gpt_neox"
    raise ValueError(f"no transformers model (GPT-2, GPT-Neo, GPT-NeoX) has this architecture: {arch}")


def _saved_tokenizer(args):
    """The tokenizer the checkpoint was trained with, or None (said) when its files are gone."""
    try:
        return saved_tokenizer(args)
    except (FileNotFoundError, ValueError) as error:
        print(f"warning: no tokenizer written, and config.json keeps transformers' default special ids: {error}")
        return None


def _special_ids(tokenizer, bert):
    """config.json's special token ids: the tokenizer's own (transformers' defaults are GPT-2's 50256 for
    GPT-2 and GPT-Neo, 0 and 2 for GPT-NeoX, whatever the vocabulary)."""
    if bert:
        return {"pad_token_id": tokenizer.pad}
    return {"bos_token_id": tokenizer.eod, "eos_token_id": tokenizer.eod}


def to_hf(load_dir, hf_dir):
    from safetensors.torch import save_file
    state, args, tag = read_checkpoint(load_dir)
    bert = "tokentype_embeddings" in state
    convert = _bert_to_hf if bert else {"gpt2": _gpt2_to_hf, "gpt_neo": _gpt_neo_to_hf,
                                        "gpt_neox": _gpt_neox_to_hf}[transformers_family(args)]
    config, hf_state = convert(state, args)
    tokenizer = _saved_tokenizer(args)
    if tokenizer is not None:
        config.update(_special_ids(tokenizer, bert))
    os.makedirs(hf_dir, exist_ok=True)
    config.save_pretrained(hf_dir)
    save_file({k: v.clone() for k, v in hf_state.items()}, os.path.join(hf_dir, "model.safetensors"),  # untie
              metadata={"format": "pt"})
    try:
        if tokenizer is not None:
            save_for_transformers(tokenizer, hf_dir, bert=bert,
                                  model_max_length=args.get("max_position_embeddings", 1024))
    except ValueError as error:  # a tokenizer transformers has no form of (CharacterLevelTokenizer)
        print(f"warning: no tokenizer written: {error}")
    print(f"wrote {hf_dir} from {load_dir}/{tag}")


def reshape(load_dir, save_dir, tag, model_parallel_size, pipe_parallel_size):
    """The layout-free form of load_dir's tag, committed in save_dir."""
    if os.path.abspath(load_dir) == os.path.abspath(save_dir):
        raise ValueError("--save must be another folder than --load (a resume at another layout converts in place "
                         "by itself)")
    tag = complete_tag(load_dir, tag)
    folder = universal_folder(os.path.join(save_dir, tag))
    started = time.time()
    state = write_universal(os.path.join(load_dir, tag), folder)
    args = state["args"]
    problems = [f"--model-parallel-size {model_parallel_size}: {what} {args[name]} does not split into "
                f"{model_parallel_size}" for name, what in (("num_attention_heads", "--num-attention-heads"),
                                                            ("ffn_hidden_size", "--ffn-hidden-size"))
                if model_parallel_size and args.get(name) and args[name] % model_parallel_size]
    if pipe_parallel_size and pipe_parallel_size > args["num_layers"]:
        problems.append(f"--pipe-parallel-size {pipe_parallel_size}: more stages than --num-layers {args['num_layers']}")
    if problems:
        shutil.rmtree(os.path.join(save_dir, tag))
        raise ValueError("; ".join(problems))
    commit(save_dir, tag, state["iteration"], {"universal": True}, state["consumed_samples"])
    layout = "".join(f" {flag} {size}" for flag, size in (("--model-parallel-size", model_parallel_size),
                                                          ("--pipe-parallel-size", pipe_parallel_size)) if size)
    print(f"wrote {folder} from {load_dir}/{tag} ({len(state['parameters'])} parameters, iteration "
          f"{state['iteration']}, {time.time() - started:.1f} s); resume with --load {save_dir}{layout}")


def main(argv=None):
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from-hf", help="transformers directory to read")
    parser.add_argument("--save", help="checkpoint directory to write (with --from-hf, or --load)")
    parser.add_argument("--model-parallel-size", type=int, default=None,
                        help="tensor-parallel shards to write (--from-hf; default 1), or to check (--load --save)")
    parser.add_argument("--pipe-parallel-size", type=int, default=None, help="pipeline stages to check (--load --save)")
    parser.add_argument("--load-tag", default=None, help="the tag of --load to convert (--load --save)")
    parser.add_argument("--make-vocab-size-divisible-by", type=int, default=128)
    parser.add_argument("--load", help="checkpoint directory to read")
    parser.add_argument("--to-hf", help="transformers directory to write (with --load)")
    args = parser.parse_args(argv)
    if [bool(args.from_hf), bool(args.load), bool(args.save), bool(args.to_hf)] not in (
            [True, False, True, False], [False, True, False, True], [False, True, True, False]):
        parser.error("use --from-hf HF_DIR --save CKPT_DIR, --load CKPT_DIR --to-hf HF_DIR, or --load CKPT_DIR --save "
                     "CKPT_DIR2")
    try:
        if args.from_hf:
            from_hf(args.from_hf, args.save, args.model_parallel_size or 1, args.make_vocab_size_divisible_by)
        elif args.to_hf:
            to_hf(args.load, args.to_hf)
        else:
            reshape(args.load, args.save, args.load_tag, args.model_parallel_size, args.pipe_parallel_size)
    except (FileNotFoundError, ValueError, KeyError) as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
