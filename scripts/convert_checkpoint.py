"""Convert between a checkpoint here and a Hugging Face transformers directory (BERT).

    python scripts/convert_checkpoint.py --from-hf HF_DIR --save CKPT_DIR [--model-parallel-size N]
    python scripts/convert_checkpoint.py --load CKPT_DIR --to-hf HF_DIR

--from-hf reads a BertForPreTraining (or encoder-only BertModel: its pooler and pretraining heads are
then freshly initialised, and said so) from config.json + model.safetensors (or pytorch_model.bin),
splits it into N tensor-parallel shards and writes a checkpoint that `--load CKPT_DIR --finetune`
starts from. --to-hf merges the shards of any tensor-parallel size (ZeRO-3 checkpoints included) and
writes config.json, model.safetensors and the tokenizer's vocabulary, which
transformers.BertForPreTraining.from_pretrained loads.
"""

import argparse
import json
import os
import shutil
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from checkpoint_files import read_checkpoint, write_checkpoint  # noqa: E402
from data_utils.tokenization import padded_vocab_size  # noqa: E402
from model.bert_conversion import bert_from_hf, fill_missing_heads, hf_from_bert  # noqa: E402
from model.tensor_parallel_state import split_state  # noqa: E402


def _read_hf_state(directory):
    safetensors_path = os.path.join(directory, "model.safetensors")
    if os.path.isfile(safetensors_path):
        from safetensors.torch import load_file
        return load_file(safetensors_path)
    binary = os.path.join(directory, "pytorch_model.bin")
    if os.path.isfile(binary):
        return torch.load(binary, map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"--from-hf {directory}: no model.safetensors or pytorch_model.bin")


def from_hf(hf_dir, save_dir, model_parallel_size, divisible_by):
    with open(os.path.join(hf_dir, "config.json")) as f:
        config = json.load(f)
    if config.get("model_type") != "bert":
        raise ValueError(f"--from-hf {hf_dir}: model_type {config.get('model_type')!r}; only bert converts here yet")
    if config.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"--from-hf {hf_dir}: hidden_act {config['hidden_act']!r}; BertModel here uses exact gelu")
    vocab, hidden, layers = config["vocab_size"], config["hidden_size"], config["num_hidden_layers"]
    padded = padded_vocab_size(vocab, divisible_by, model_parallel_size)
    state = bert_from_hf(_read_hf_state(hf_dir), layers, padded)
    filled = fill_missing_heads(state, hidden, padded, vocab)
    if filled:
        print(f"{hf_dir} has no {', '.join(filled)}: initialised fresh (an encoder-only model)")
    args = {"num_layers": layers, "hidden_size": hidden, "num_attention_heads": config["num_attention_heads"],
            "max_position_embeddings": config["max_position_embeddings"], "layernorm_epsilon": config["layer_norm_eps"],
            "text_vocab_size": vocab, "padded_vocab_size": padded, "model_type": "bert"}
    vocab_file = os.path.join(hf_dir, "vocab.txt")
    if os.path.isfile(vocab_file):
        os.makedirs(save_dir, exist_ok=True)
        shutil.copy(vocab_file, os.path.join(save_dir, "vocab.txt"))
        args.update(vocab_file=os.path.join(save_dir, "vocab.txt"),
                    tokenizer_type="BertWordPieceLowerCase" if config.get("do_lower_case", True) else "BertWordPieceCase")
    write_checkpoint(save_dir, split_state(state, model_parallel_size), args)
    print(f"wrote {save_dir} ({model_parallel_size} tensor-parallel shards, vocabulary padded {vocab} -> {padded})")


def to_hf(load_dir, hf_dir):
    from transformers import BertConfig
    from safetensors.torch import save_file
    state, args, tag = read_checkpoint(load_dir)
    if "tokentype_embeddings" not in state:
        raise ValueError(f"--load {load_dir}: not a BERT checkpoint (no token-type embeddings)")
    layers, vocab = args["num_layers"], args["text_vocab_size"]
    hidden = state["position_embeddings"].size(1)
    config = BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=args["num_attention_heads"],
                        intermediate_size=state["transformer.layers.0.mlp.dense_h_to_4h.weight"].size(0),
                        max_position_embeddings=state["position_embeddings"].size(0),
                        type_vocab_size=state["tokentype_embeddings"].size(0),
                        layer_norm_eps=args.get("layernorm_epsilon", 1e-12), architectures=["BertForPreTraining"])
    os.makedirs(hf_dir, exist_ok=True)
    config.save_pretrained(hf_dir)
    hf_state = hf_from_bert(state, layers, vocab)
    save_file({k: v.clone() for k, v in hf_state.items()}, os.path.join(hf_dir, "model.safetensors"),  # untie
              metadata={"format": "pt"})
    vocab_file = args.get("vocab_file")
    if vocab_file and os.path.isfile(vocab_file):
        shutil.copy(vocab_file, os.path.join(hf_dir, "vocab.txt"))
    elif args.get("tokenizer_path") and os.path.isfile(args["tokenizer_path"]):
        shutil.copy(args["tokenizer_path"], os.path.join(hf_dir, "spiece.model"))
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
