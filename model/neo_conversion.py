"""Our GPT2Model's state dict and flags <-> transformers' GPTNeoForCausalLM and GPTNeoXForCausalLM.

Full (TP=1) state dicts, as model/gpt2_conversion.py. Both use nn.Linear ([out, in], no transposes).
GPT-Neo has separate q/k/v projections without biases (ours: one [q; k; v] weight, no qkv bias), learned
positions, global/local layers, unscaled attention scores and a tied output. GPT-NeoX fuses q, k and v
per head ([head 0: q k v, head 1: q k v, ...]; ours: [all q; all k; all v]), uses rotary positions on a
fraction of each head, parallel residuals and an untied output (lm_head in memory, embed_out in its
files). Padded vocabulary rows are dropped going out and zero coming in.
"""

import torch

_NEO_LAYER = {  # ours: theirs, under transformer.layers.i / transformer.h.i
    "attention_layernorm.weight": "ln_1.weight", "attention_layernorm.bias": "ln_1.bias",
    "attention.dense.weight": "attn.attention.out_proj.weight", "attention.dense.bias": "attn.attention.out_proj.bias",
    "mlp_layernorm.weight": "ln_2.weight", "mlp_layernorm.bias": "ln_2.bias",
    "mlp.dense_h_to_4h.weight": "mlp.c_fc.weight", "mlp.dense_h_to_4h.bias": "mlp.c_fc.bias",
    "mlp.dense_4h_to_h.weight": "mlp.c_proj.weight", "mlp.dense_4h_to_h.bias": "mlp.c_proj.bias",
}
_NEOX_LAYER = {
    "attention_layernorm.weight": "input_layernorm.weight", "attention_layernorm.bias": "input_layernorm.bias",
    "mlp_layernorm.weight": "post_attention_layernorm.weight", "mlp_layernorm.bias": "post_attention_layernorm.bias",
    "attention.dense.weight": "attention.dense.weight", "attention.dense.bias": "attention.dense.bias",
    "mlp.dense_h_to_4h.weight": "mlp.dense_h_to_4h.weight", "mlp.dense_h_to_4h.bias": "mlp.dense_h_to_4h.bias",
    "mlp.dense_4h_to_h.weight": "mlp.dense_4h_to_h.weight", "mlp.dense_4h_to_h.bias": "mlp.dense_4h_to_h.bias",
}


def _padded(rows, padded_vocab_size):
    return torch.cat([rows, rows.new_zeros(padded_vocab_size - rows.size(0), *rows.shape[1:])])


def _per_head_to_blocks(tensor, heads):
    """NeoX's [head: q k v] rows -> ours [q heads; k heads; v heads] (weight or bias)."""
    return tensor.reshape(heads, 3, -1, *tensor.shape[1:]).transpose(0, 1).reshape(tensor.shape).contiguous()


def _blocks_to_per_head(tensor, heads):
    return tensor.reshape(3, heads, -1, *tensor.shape[1:]).transpose(0, 1).reshape(tensor.shape).contiguous()


def _neox_layers(source, layers, heads, to_ours):
    """The transformer layers' tensors of one side (ours or GPT-NeoX's) from the other's."""
    reorder = _per_head_to_blocks if to_ours else _blocks_to_per_head
    names = {**_NEOX_LAYER, **{f"attention.query_key_value.{kind}": f"attention.query_key_value.{kind}"
                                for kind in ("weight", "bias")}}
    out = {}
    for i in range(layers):
        for ours, theirs in names.items():
            ours, theirs = f"transformer.layers.{i}.{ours}", f"gpt_neox.layers.{i}.{theirs}"
            source_name, target_name = (theirs, ours) if to_ours else (ours, theirs)
            tensor = source[source_name]
            out[target_name] = reorder(tensor, heads) if "query_key_value" in ours else tensor.clone()
    return out


def gpt_neo_from_hf(config, hf_state, padded_vocab_size):
    """(our state dict, our flags) of a GPTNeoForCausalLM."""
    flags = gpt_neo_flags(config)
    layers = config["num_layers"]
    state = {"word_embeddings.weight": _padded(hf_state["transformer.wte.weight"], padded_vocab_size),
             "position_embeddings": hf_state["transformer.wpe.weight"].clone(),
             "transformer.final_layernorm.weight": hf_state["transformer.ln_f.weight"].clone(),
             "transformer.final_layernorm.bias": hf_state["transformer.ln_f.bias"].clone()}
    for i in range(layers):
        ours, theirs = f"transformer.layers.{i}.", f"transformer.h.{i}."
        state[ours + "attention.query_key_value.weight"] = torch.cat(
            [hf_state[f"{theirs}attn.attention.{p}_proj.weight"] for p in "qkv"])
        for name, their_name in _NEO_LAYER.items():
            state[ours + name] = hf_state[theirs + their_name].clone()
    return state, flags


def gpt_neo_flags(config):
    """Our flags of a GPTNeoForCausalLM's config."""
    hidden = config["hidden_size"]
    activation = {"gelu_new": "gelu_tanh", "gelu": "gelu", "relu": "relu", "silu": "silu"}.get(
        config.get("activation_function", "gelu_new"))
    if activation is None:
        raise ValueError(f"activation_function {config['activation_function']!r}: not one of ours")
    return {"num_layers": config["num_layers"], "hidden_size": hidden, "num_attention_heads": config["num_heads"],
            "ffn_hidden_size": config.get("intermediate_size") or 4 * hidden,
            "max_position_embeddings": config["max_position_embeddings"],
            "layernorm_epsilon": config.get("layer_norm_epsilon", 1e-5), "model_type": "gpt2",
            "attention_types": " ".join(config["attention_layers"]), "attention_window": config["window_size"],
            "no_attention_scaling": True, "no_qkv_bias": True, "activation": activation,
            "hidden_dropout": config.get("resid_dropout", 0.0), "attention_dropout": config.get("attention_dropout", 0.0)}


def hf_from_gpt_neo(state, args, vocab_size):
    """(GPTNeoConfig keyword arguments, GPTNeoForCausalLM state dict)."""
    layers = args["num_layers"]
    hidden = state["word_embeddings.weight"].size(1)
    words = state["word_embeddings.weight"][:vocab_size].clone()
    hf_state = {"transformer.wte.weight": words,  # lm_head is tied to it: transformers saves neither twice
                "transformer.wpe.weight": state["position_embeddings"].clone(),
                "transformer.ln_f.weight": state["transformer.final_layernorm.weight"].clone(),
                "transformer.ln_f.bias": state["transformer.final_layernorm.bias"].clone()}
    for i in range(layers):
        ours, theirs = f"transformer.layers.{i}.", f"transformer.h.{i}."
        for projection, tensor in zip("qkv", state[ours + "attention.query_key_value.weight"].chunk(3)):
            hf_state[f"{theirs}attn.attention.{projection}_proj.weight"] = tensor.clone()
        for name, their_name in _NEO_LAYER.items():
            hf_state[theirs + their_name] = state[ours + name].clone()
    types = args.get("attention_types", "global").split()
    config = dict(vocab_size=vocab_size, max_position_embeddings=state["position_embeddings"].size(0),
                  hidden_size=hidden, num_layers=layers, num_heads=args["num_attention_heads"],
                  attention_types=[[[types[i % len(types)]], 1] for i in range(layers)],
                  intermediate_size=state["transformer.layers.0.mlp.dense_h_to_4h.weight"].size(0),
                  window_size=args.get("attention_window", 256),
                  activation_function={"gelu_tanh": "gelu_new"}.get(args.get("activation"), args.get("activation")),
                  layer_norm_epsilon=args.get("layernorm_epsilon", 1e-5), tie_word_embeddings=True,
                  architectures=["GPTNeoForCausalLM"])
    return config, hf_state


def gpt_neox_from_hf(config, hf_state, padded_vocab_size):
    """(our state dict, our flags) of a GPTNeoXForCausalLM."""
    flags = gpt_neox_flags(config)
    layers, heads = config["num_hidden_layers"], config["num_attention_heads"]
    tied = config.get("tie_word_embeddings", False)
    state = {"word_embeddings.weight": _padded(hf_state["gpt_neox.embed_in.weight"], padded_vocab_size),
             "transformer.final_layernorm.weight": hf_state["gpt_neox.final_layer_norm.weight"].clone(),
             "transformer.final_layernorm.bias": hf_state["gpt_neox.final_layer_norm.bias"].clone()}
    if not tied:
        output = hf_state["embed_out.weight"] if "embed_out.weight" in hf_state else hf_state["lm_head.weight"]
        state["output_embeddings.weight"] = _padded(output, padded_vocab_size)
    state.update(_neox_layers(hf_state, layers, heads, to_ours=True))
    return state, flags


def gpt_neox_flags(config):
    """Our flags of a GPTNeoXForCausalLM's config."""
    if not config.get("attention_bias", True):
        raise ValueError("attention_bias false: GPT-NeoX without attention biases does not convert (its MLP keeps "
                         "biases, which --no-bias would drop)")
    rope = config.get("rope_parameters") or {}
    activation = {"gelu": "gelu", "gelu_new": "gelu_tanh", "relu": "relu", "silu": "silu"}.get(config.get("hidden_act"))
    if activation is None:
        raise ValueError(f"hidden_act {config.get('hidden_act')!r}: not one of ours")
    return {"num_layers": config["num_hidden_layers"], "hidden_size": config["hidden_size"],
            "num_attention_heads": config["num_attention_heads"], "ffn_hidden_size": config["intermediate_size"],
            "max_position_embeddings": config["max_position_embeddings"],
            "layernorm_epsilon": config.get("layer_norm_eps", 1e-5), "model_type": "gpt2",
            "position_embedding_type": "rotary", "rotary_pct": rope.get("partial_rotary_factor", 1.0),
            "rotary_emb_base": rope.get("rope_theta", 10000.0), "activation": activation,
            "parallel_residual": config.get("use_parallel_residual", True),
            "untie_embeddings": not config.get("tie_word_embeddings", False),
            "hidden_dropout": config.get("hidden_dropout", 0.0), "attention_dropout": config.get("attention_dropout", 0.0)}


def hf_from_gpt_neox(state, args, vocab_size):
    """(GPTNeoXConfig keyword arguments, GPTNeoXForCausalLM state dict)."""
    layers, heads = args["num_layers"], args["num_attention_heads"]
    words = state["word_embeddings.weight"][:vocab_size].clone()
    untied = "output_embeddings.weight" in state
    hf_state = {"gpt_neox.embed_in.weight": words,
                "gpt_neox.final_layer_norm.weight": state["transformer.final_layernorm.weight"].clone(),
                "gpt_neox.final_layer_norm.bias": state["transformer.final_layernorm.bias"].clone()}
    if untied:
        hf_state["embed_out.weight"] = state["output_embeddings.weight"][:vocab_size].clone()
    hf_state.update(_neox_layers(state, layers, heads, to_ours=False))
    config = dict(vocab_size=vocab_size, hidden_size=words.size(1), num_hidden_layers=layers,
                  num_attention_heads=heads, intermediate_size=state["transformer.layers.0.mlp.dense_h_to_4h.weight"].size(0),
                  hidden_act={"gelu_tanh": "gelu_new"}.get(args.get("activation"), args.get("activation")),
                  max_position_embeddings=args["max_position_embeddings"],
                  layer_norm_eps=args.get("layernorm_epsilon", 1e-5),
                  use_parallel_residual=bool(args.get("parallel_residual")), tie_word_embeddings=not untied,
                  rope_parameters={"rope_type": "default", "rope_theta": float(args.get("rotary_emb_base", 10000.0)),
                                   "partial_rotary_factor": float(args.get("rotary_pct", 1.0))},
                  architectures=["GPTNeoXForCausalLM"])
    return config, hf_state
