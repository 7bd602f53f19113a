"""Our BertModel's state dict <-> transformers' BertForPreTraining (or BertModel) state dict.

Both directions work on full (TP=1) state dicts; model/tensor_parallel_state.py splits and merges
shards. Our vocabulary is padded (rows beyond the tokenizer's vocabulary); the padding is dropped
going to transformers and filled with zeros coming back (the masked-LM bias of a padded row is set
very negative, so no padded row is ever predicted).
"""

import torch

_EMBEDDINGS = {
    "position_embeddings": "bert.embeddings.position_embeddings.weight",
    "tokentype_embeddings": "bert.embeddings.token_type_embeddings.weight",
    "embedding_layernorm.weight": "bert.embeddings.LayerNorm.weight",
    "embedding_layernorm.bias": "bert.embeddings.LayerNorm.bias",
}
_HEADS = {
    "pooler.weight": "bert.pooler.dense.weight",
    "pooler.bias": "bert.pooler.dense.bias",
    "lm_transform.weight": "cls.predictions.transform.dense.weight",
    "lm_transform.bias": "cls.predictions.transform.dense.bias",
    "lm_layernorm.weight": "cls.predictions.transform.LayerNorm.weight",
    "lm_layernorm.bias": "cls.predictions.transform.LayerNorm.bias",
    "binary_head.weight": "cls.seq_relationship.weight",
    "binary_head.bias": "cls.seq_relationship.bias",
}
_LAYER = {
    "attention.dense.{}": "attention.output.dense.{}",
    "attention_layernorm.{}": "attention.output.LayerNorm.{}",
    "mlp.dense_h_to_4h.{}": "intermediate.dense.{}",
    "mlp.dense_4h_to_h.{}": "output.dense.{}",
    "mlp_layernorm.{}": "output.LayerNorm.{}",
}
PADDED_ROW_BIAS = -1e4


def _names(num_layers):
    """(ours, theirs) for every one-to-one parameter."""
    pairs = list(_EMBEDDINGS.items()) + list(_HEADS.items())
    for i in range(num_layers):
        for ours, theirs in _LAYER.items():
            for kind in ("weight", "bias"):
                pairs.append((f"transformer.layers.{i}.{ours.format(kind)}",
                              f"bert.encoder.layer.{i}.{theirs.format(kind)}"))
    return pairs


def _with_bert_prefix(hf_state):
    """A BertModel (encoder only) state dict has no "bert." prefix; BertForPreTraining's has."""
    if any(k.startswith("bert.") for k in hf_state):
        return hf_state
    return {f"bert.{k}": v for k, v in hf_state.items()}


def bert_from_hf(hf_state, num_layers, padded_vocab_size):
    """Our full state dict; heads the transformers model lacks (an encoder-only BertModel) are left out
    (see fill_missing_heads)."""
    hf_state = _with_bert_prefix(hf_state)
    words = hf_state["bert.embeddings.word_embeddings.weight"]
    vocab_size = words.size(0)
    state = {"word_embeddings.weight": torch.cat([words, words.new_zeros(padded_vocab_size - vocab_size,
                                                                         words.size(1))])}
    for ours, theirs in _names(num_layers):
        if theirs in hf_state:
            state[ours] = hf_state[theirs].clone()
    for i in range(num_layers):
        prefix = f"bert.encoder.layer.{i}.attention.self"
        for kind in ("weight", "bias"):
            state[f"transformer.layers.{i}.attention.query_key_value.{kind}"] = torch.cat(
                [hf_state[f"{prefix}.{part}.{kind}"] for part in ("query", "key", "value")])
    if "cls.predictions.bias" in hf_state:
        bias = hf_state["cls.predictions.bias"]
        state["lm_bias"] = torch.cat([bias, bias.new_full((padded_vocab_size - vocab_size,), PADDED_ROW_BIAS)])
    return state


def hf_from_bert(state, num_layers, vocab_size):
    """BertForPreTraining's state dict (the decoder weight tied to the word embeddings)."""
    hf_state = {theirs: state[ours].clone() for ours, theirs in _names(num_layers) if ours in state}
    words = state["word_embeddings.weight"][:vocab_size].clone()
    hf_state["bert.embeddings.word_embeddings.weight"] = words
    hf_state["cls.predictions.decoder.weight"] = words
    for i in range(num_layers):
        for kind in ("weight", "bias"):
            q, k, v = torch.chunk(state[f"transformer.layers.{i}.attention.query_key_value.{kind}"], 3)
            for part, tensor in zip(("query", "key", "value"), (q, k, v)):
                hf_state[f"bert.encoder.layer.{i}.attention.self.{part}.{kind}"] = tensor.clone()
    if "lm_bias" in state:
        hf_state["cls.predictions.bias"] = state["lm_bias"][:vocab_size].clone()
        hf_state["cls.predictions.decoder.bias"] = hf_state["cls.predictions.bias"]
    return hf_state


def fill_missing_heads(state, hidden_size, padded_vocab_size, vocab_size, init_method_std=0.02, seed=0):
    """Give an encoder-only state dict freshly initialised pooler and pretraining heads, as BertModel
    initialises them; returns the names filled."""
    generator = torch.Generator().manual_seed(seed)

    def normal(*shape):
        return torch.randn(*shape, generator=generator) * init_method_std
    fresh = {"pooler.weight": normal(hidden_size, hidden_size), "pooler.bias": torch.zeros(hidden_size),
             "lm_transform.weight": normal(hidden_size, hidden_size), "lm_transform.bias": torch.zeros(hidden_size),
             "lm_layernorm.weight": torch.ones(hidden_size), "lm_layernorm.bias": torch.zeros(hidden_size),
             "lm_bias": torch.cat([torch.zeros(vocab_size), torch.full((padded_vocab_size - vocab_size,),
                                                                       PADDED_ROW_BIAS)]),
             "binary_head.weight": normal(2, hidden_size), "binary_head.bias": torch.zeros(2)}
    filled = [name for name in fresh if name not in state]
    state.update({name: fresh[name] for name in filled})
    return filled
