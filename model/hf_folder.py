"""A transformers model folder (config.json + model.safetensors or pytorch_model.bin) of GPT-2 or BERT as
our full (TP=1) state dict and the flags a checkpoint saves: scripts/convert_checkpoint.py --from-hf
writes it as a checkpoint, evaluation reads it in memory (scripts/run_gpt2_eval.py --model-path)."""

import json
import os

import torch

from data_utils.tokenization import padded_vocab_size

from .bert_conversion import bert_from_hf, fill_missing_heads
from .gpt2_conversion import gpt2_from_hf
from .neo_conversion import gpt_neo_flags, gpt_neo_from_hf, gpt_neox_flags, gpt_neox_from_hf


def is_hf_folder(directory):
    return os.path.isfile(os.path.join(directory, "config.json"))


def read_hf_state(directory):
    safetensors_path = os.path.join(directory, "model.safetensors")
    if os.path.isfile(safetensors_path):
        from safetensors.torch import load_file
        return load_file(safetensors_path)
    binary = os.path.join(directory, "pytorch_model.bin")
    if os.path.isfile(binary):
        return torch.load(binary, map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{directory}: no model.safetensors or pytorch_model.bin")


def _bert_from_hf(config, hf_state, padded):
    if config.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"hidden_act {config['hidden_act']!r}: BertModel here uses exact gelu")
    layers = config["num_hidden_layers"]
    state = bert_from_hf(hf_state, layers, padded)
    filled = fill_missing_heads(state, config["hidden_size"], padded, config["vocab_size"])
    if filled:
        print(f"no {', '.join(filled)} in the model: initialised fresh (an encoder-only model)")
    shape = {"num_layers": layers, "hidden_size": config["hidden_size"],
             "num_attention_heads": config["num_attention_heads"], "ffn_hidden_size": config["intermediate_size"],
             "max_position_embeddings": config["max_position_embeddings"],
             "layernorm_epsilon": config["layer_norm_eps"], "model_type": "bert"}
    return state, shape


def gpt2_flags(config):
    """Our flags of a GPT2LMHeadModel's config."""
    if config.get("activation_function", "gelu_new") != "gelu_new":
        raise ValueError(f"activation_function {config['activation_function']!r}: GPT2Model here uses gelu_new")
    return {"num_layers": config["n_layer"], "hidden_size": config["n_embd"], "num_attention_heads": config["n_head"],
            "ffn_hidden_size": config.get("n_inner") or 4 * config["n_embd"],
            "max_position_embeddings": config["n_positions"],
            "layernorm_epsilon": config.get("layer_norm_epsilon", 1e-5), "model_type": "gpt2",
            "hidden_dropout": config.get("resid_pdrop", 0.1), "attention_dropout": config.get("attn_pdrop", 0.1)}


def _gpt2_from_hf(config, hf_state, padded):
    flags = gpt2_flags(config)
    return gpt2_from_hf(hf_state, config["n_layer"], padded), flags


GPT_FLAGS = {"gpt2": gpt2_flags, "gpt_neo": gpt_neo_flags, "gpt_neox": gpt_neox_flags}


def read_config(directory):
    with open(os.path.join(directory, "config.json")) as f:
        return json.load(f)


def gpt_flags_from_hf(directory):
    """(our flags, transformers config) of a GPT-2, GPT-Neo or GPT-NeoX folder, from its config.json alone."""
    config = read_config(directory)
    flags_of = GPT_FLAGS.get(config.get("model_type"))
    if flags_of is None:
        raise ValueError(f"{directory}: model_type {config.get('model_type')!r}; gpt2, gpt_neo and gpt_neox train here "
                         "(a BERT: pretrain_bert.py)")
    return flags_of(config), config


def state_from_hf(directory, model_parallel_size, divisible_by):
    """(state dict, saved flags, transformers config) of the folder, its vocabulary padded for
    model_parallel_size as training pads it."""
    config = read_config(directory)
    convert = {"bert": _bert_from_hf, "gpt2": _gpt2_from_hf, "gpt_neo": gpt_neo_from_hf,
               "gpt_neox": gpt_neox_from_hf}.get(config.get("model_type"))
    if convert is None:
        raise ValueError(f"{directory}: model_type {config.get('model_type')!r}; bert, gpt2, gpt_neo and gpt_neox "
                         "convert")
    vocab = config["vocab_size"]
    padded = padded_vocab_size(vocab, divisible_by, model_parallel_size)
    state, args = convert(config, read_hf_state(directory), padded)
    args.update(text_vocab_size=vocab, padded_vocab_size=padded)
    return state, args, config
