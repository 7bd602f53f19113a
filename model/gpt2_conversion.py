"""Our GPT2Model's state dict <-> transformers' GPT2LMHeadModel state dict.

Both directions work on full (TP=1) state dicts (model/tensor_parallel_state.py splits and merges
shards). transformers' GPT-2 keeps OpenAI's Conv1D layout ([in, out]), ours is nn.Linear's
([out, in]): weights are transposed. The fused [q; k; v] projection is the same concatenation in
both. Our padded vocabulary rows are dropped going out and zero coming in.
"""

import torch

_TOP = {
    "position_embeddings": "transformer.wpe.weight",
    "transformer.final_layernorm.weight": "transformer.ln_f.weight",
    "transformer.final_layernorm.bias": "transformer.ln_f.bias",
}
_LAYER = {  # ours: (theirs, transposed)
    "attention_layernorm.weight": ("ln_1.weight", False),
    "attention_layernorm.bias": ("ln_1.bias", False),
    "attention.query_key_value.weight": ("attn.c_attn.weight", True),
    "attention.query_key_value.bias": ("attn.c_attn.bias", False),
    "attention.dense.weight": ("attn.c_proj.weight", True),
    "attention.dense.bias": ("attn.c_proj.bias", False),
    "mlp_layernorm.weight": ("ln_2.weight", False),
    "mlp_layernorm.bias": ("ln_2.bias", False),
    "mlp.dense_h_to_4h.weight": ("mlp.c_fc.weight", True),
    "mlp.dense_h_to_4h.bias": ("mlp.c_fc.bias", False),
    "mlp.dense_4h_to_h.weight": ("mlp.c_proj.weight", True),
    "mlp.dense_4h_to_h.bias": ("mlp.c_proj.bias", False),
}


def _names(num_layers):
    """(ours, theirs, transposed) for every parameter but the word embeddings."""
    pairs = [(ours, theirs, False) for ours, theirs in _TOP.items()]
    for i in range(num_layers):
        pairs += [(f"transformer.layers.{i}.{ours}", f"transformer.h.{i}.{theirs}", transposed)
                  for ours, (theirs, transposed) in _LAYER.items()]
    return pairs


def gpt2_from_hf(hf_state, num_layers, padded_vocab_size):
    words = hf_state["transformer.wte.weight"]
    state = {"word_embeddings.weight": torch.cat([words, words.new_zeros(padded_vocab_size - words.size(0),
                                                                         words.size(1))])}
    for ours, theirs, transposed in _names(num_layers):
        tensor = hf_state[theirs]
        state[ours] = (tensor.t() if transposed else tensor).contiguous().clone()
    return state


def hf_from_gpt2(state, num_layers, vocab_size):
    """GPT2LMHeadModel's state dict (lm_head.weight tied to the word embeddings)."""
    words = state["word_embeddings.weight"][:vocab_size].clone()
    hf_state = {"transformer.wte.weight": words, "lm_head.weight": words}
    for ours, theirs, transposed in _names(num_layers):
        tensor = state[ours]
        hf_state[theirs] = (tensor.t() if transposed else tensor).contiguous().clone()
    return hf_state
