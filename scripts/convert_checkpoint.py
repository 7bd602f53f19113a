"""Convert between a checkpoint here and a Hugging Face transformers directory (BERT, GPT-2, GPT-Neo,
GPT-NeoX).

    python scripts/convert_checkpoint.py --from-hf HF_DIR --save CKPT_DIR [--model-parallel-size N]
    python scripts/convert_checkpoint.py --load CKPT_DIR --to-hf HF_DIR

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


sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from arguments import add_architecture_args, saved_tokenizer  # noqa: E402
from checkpointing import read_checkpoint, write_checkpoint  # noqa: E402
from data_utils.hf_tokenizer import save_for_transformers  # noqa: E402
from model.bert_conversion import hf_from_bert  # noqa: E402
from model.gpt2_conversion import hf_from_gpt2  # noqa: E402
from model.architecture import GLU_ACTIVATIONS, architecture_from_args  # noqa: E402
from model.hf_folder import state_from_hf  # noqa: E402
from model.neo_conversion import hf_from_gpt_neo, hf_from_gpt_neox  # noqa: E402
from model.tensor_parallel_state import split_state  # noqa: E402


def from_hf(hf_dir, save_dir, model_parallel_size, divisible_by):
    state, args, config = state_from_hf(hf_dir, model_parallel_size, divisible_by)
    vocab, padded = args["text_vocab_size"], args["padded_vocab_size"]
    save_dir = os.path.abspath(save_dir)  # the tokenizer paths recorded below must not depend on the cwd
    os.makedirs(save_dir, exist_ok=True)
    for name in TOKENIZER_FILES:
        if os.path.isfile(os.path.join(hf_dir, name)):
            shutil.copy(os.path.join(hf_dir, name), os.path.join(save_dir, name))
    if os.path.isfile(os.path.join(save_dir, "vocab.txt")):
        args.update(vocab_file=os.path.join(save_dir, "vocab.txt"),
                    tokenizer_type="BertWordPieceLowerCase" if config.get("do_lower_case", True) else "BertWordPieceCase")
    elif os.path.isfile(os.path.join(save_dir, "vocab.json")):
        args.update(vocab_file=os.path.join(save_dir, "vocab.json"), merge_file=os.path.join(save_dir, "merges.txt"),
                    tokenizer_type="GPT2BPETokenizer")
    write_checkpoint(save_dir, split_state(state, model_parallel_size), args)
    print(f"wrote {save_dir} ({model_parallel_size} tensor-parallel shards, vocabulary padded {vocab} -> {padded})")


TOKENIZER_FILES = ("vocab.txt", "vocab.json", "merges.txt")


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


def _write_tokenizer_files(args, hf_dir, bert, max_positions):
    """The tokenizer the checkpoint was trained with, as AutoTokenizer reads it (data_utils/hf_tokenizer.py)."""
    try:
        tokenizer = saved_tokenizer(args)
    except (FileNotFoundError, ValueError) as error:
        print(f"warning: no tokenizer written: {error}")
        return
    save_for_transformers(tokenizer, hf_dir, bert=bert, model_max_length=max_positions)


def to_hf(load_dir, hf_dir):
    from safetensors.torch import save_file
    state, args, tag = read_checkpoint(load_dir)
    bert = "tokentype_embeddings" in state
    convert = _bert_to_hf if bert else {"gpt2": _gpt2_to_hf, "gpt_neo": _gpt_neo_to_hf,
                                        "gpt_neox": _gpt_neox_to_hf}[transformers_family(args)]
    config, hf_state = convert(state, args)
    os.makedirs(hf_dir, exist_ok=True)
    config.save_pretrained(hf_dir)
    save_file({k: v.clone() for k, v in hf_state.items()}, os.path.join(hf_dir, "model.safetensors"),  # untie
              metadata={"format": "pt"})
    _write_tokenizer_files(args, hf_dir, bert, args.get("max_position_embeddings", 1024))
    print(f"wrote {hf_dir} from {load_dir}/{tag}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from-hf", help="transformers directory to read")
    parser.add_argument("--save", help="checkpoint directory to write (with --from-hf)")
    parser.add_argument("--model-parallel-size", type=int, default=1, help="tensor-parallel shards to write")
    parser.add_argument("--make-vocab-size-divisible-by", type=int, default=128)
    parser.add_argument("--load", help="checkpoint directory to read")
    parser.add_argument("--to-hf", help="transformers directory to write (with --load)")
    args = parser.parse_args(argv)
    if bool(args.from_hf) == bool(args.load) or bool(args.from_hf) != bool(args.save) or bool(args.load) != bool(args.to_hf):
        parser.error("use either --from-hf HF_DIR --save CKPT_DIR or --load CKPT_DIR --to-hf HF_DIR")
    try:
        if args.from_hf:
            from_hf(args.from_hf, args.save, args.model_parallel_size, args.make_vocab_size_divisible_by)
        else:
            to_hf(args.load, args.to_hf)
    except (FileNotFoundError, ValueError, KeyError) as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
