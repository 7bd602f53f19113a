"""BERT built from mpu layers: token, position and token-type embeddings, a bidirectional transformer
(post-LayerNorm as in the original BERT, pre-LayerNorm as an option), a pooler, and the two
pretraining heads: masked-LM (transform, LayerNorm, output tied to the word embedding, vocab-parallel)
and next-sentence / sentence-order prediction. Parameter names follow the structure of
transformers' BertForPreTraining so that model/bert_conversion.py maps them one to one.
"""

import deepspeed
import torch
import torch.nn.functional as F

import mpu

from .architecture import Architecture
from .normalization import LayerNorm
from .transformer import ParallelTransformer, init_normal


class BertModel(torch.nn.Module):
    """(tokens, token_types, padding_mask) -> (masked-LM logits [batch, seq, vocab / TP] of this rank's
    vocabulary slice, binary logits [batch, 2] or None); parallel_output=False gathers the vocabulary.
    Given masked_lm, the masked-LM loss in place of the logits, from the masked positions only (see
    forward); text_vocab_size: the real vocabulary, rows above it are padding."""

    def __init__(self, num_layers, vocab_size, hidden_size, num_attention_heads, max_sequence_length,
                 num_tokentypes=2, embedding_dropout=0.1, attention_dropout=0.1, hidden_dropout=0.1,
                 init_method_std=0.02, layernorm_epsilon=1e-12, pre_layernorm=False, ffn_hidden_size=None,
                 checkpoint_activations=False, checkpoint_num_layers=1, add_binary_head=True, parallel_output=True,
                 deep_init=False, fp32_embedding=False, fp32_tokentypes=False, activation="gelu",
                 text_vocab_size=None):
        """deep_init: output layers initialised with std / sqrt(2 x layers) (Megatron-LM v0's --deep-init);
        fp32_embedding / fp32_tokentypes: the embedding sum (and its LayerNorm) / the token-type term are
        computed in fp32 under bf16/fp16, then cast to the model's dtype (v0's flags of those names)."""
        super().__init__()
        self.parallel_output, self.max_sequence_length = parallel_output, max_sequence_length
        self.text_vocab_size = text_vocab_size
        self.fp32_embedding, self.fp32_tokentypes = fp32_embedding, fp32_tokentypes
        init = init_normal(init_method_std)
        self.word_embeddings = mpu.VocabParallelEmbedding(vocab_size, hidden_size, init_method=init)
        deepspeed.zero.register_external_parameter(self, self.word_embeddings.weight)  # tied output (ZeRO-3)
        # parameters of this module, not nn.Embedding submodules, so ZeRO-3 has not partitioned them yet
        self.position_embeddings = torch.nn.Parameter(init(torch.empty(max_sequence_length, hidden_size)))
        self.tokentype_embeddings = torch.nn.Parameter(init(torch.empty(num_tokentypes, hidden_size)))
        self.embedding_layernorm = None if pre_layernorm else LayerNorm(hidden_size, eps=layernorm_epsilon)
        self.embedding_dropout = torch.nn.Dropout(embedding_dropout)
        self.transformer = ParallelTransformer(num_layers, hidden_size, num_attention_heads, attention_dropout,
                                               hidden_dropout, init_method_std, ffn_hidden_size=ffn_hidden_size,
                                               layernorm_epsilon=layernorm_epsilon, causal=False,
                                               pre_layernorm=pre_layernorm, scaled_output_init=deep_init,
                                               architecture=Architecture(activation=activation),
                                               checkpoint_activations=checkpoint_activations,
                                               checkpoint_num_layers=checkpoint_num_layers)
        self.pooler = _Linear(hidden_size, hidden_size, init)
        self.lm_transform = _Linear(hidden_size, hidden_size, init)
        self.lm_layernorm = LayerNorm(hidden_size, eps=layernorm_epsilon)
        self.lm_bias = torch.nn.Parameter(torch.zeros(self.word_embeddings.num_embeddings_per_partition))
        mpu.layers.set_tensor_model_parallel_attributes(self.lm_bias, partition_dim=0)
        self.binary_head = _Linear(hidden_size, 2, init) if add_binary_head else None

    def encode(self, tokens, token_types=None, padding_mask=None):
        """The transformer's output [batch, seq, hidden] (transformers' BertModel sequence output)."""
        seq = tokens.size(1)
        if seq > self.max_sequence_length:
            raise ValueError(f"a sequence of {seq} tokens is longer than --max-position-embeddings "
                             f"{self.max_sequence_length}")
        token_types = torch.zeros_like(tokens) if token_types is None else token_types
        dtype = self.position_embeddings.dtype
        hidden = self.word_embeddings(tokens) + self.position_embeddings[:seq].unsqueeze(0)
        types = F.embedding(token_types, self.tokentype_embeddings)
        if self.fp32_embedding or self.fp32_tokentypes:
            hidden, types = (hidden.float() if self.fp32_embedding else hidden), types.float()
        hidden = hidden + types
        if self.embedding_layernorm is not None:
            hidden = self.embedding_layernorm(hidden)
        hidden = hidden.to(dtype)
        attention_mask = None if padding_mask is None else padding_mask.bool()[:, None, None, :]
        return self.transformer(self.embedding_dropout(hidden), attention_mask)

    def pool(self, hidden):
        """tanh(dense([CLS])) (transformers' pooler output)."""
        return torch.tanh(self.pooler(hidden[:, 0]))

    def _lm_head_input(self, hidden):
        """The masked-LM head's transform and LayerNorm, through copy_to_model_parallel_region."""
        return mpu.copy_to_model_parallel_region(self.lm_layernorm(F.gelu(self.lm_transform(hidden))))

    def forward(self, tokens, token_types=None, padding_mask=None, masked_lm=None):
        """masked_lm: (lm_positions [batch, P], labels [batch, seq], loss_mask [batch, seq], loss_tokens) for
        the loss: the head runs on the P listed positions of each sample only (~15% of them), gathered on
        the device, and its output layer, bias and cross-entropy run fused
        (mpu.vocab_parallel_output_cross_entropy); the loss is the masked positions' summed losses /
        loss_tokens. Listed positions whose loss mask is unset (padding of the list) carry no loss."""
        hidden = self.encode(tokens, token_types, padding_mask)
        binary_logits = self.binary_head(self.pool(hidden)) if self.binary_head is not None else None
        if masked_lm is not None:
            positions, labels, loss_mask, loss_tokens = masked_lm
            picked = hidden.gather(1, positions.unsqueeze(-1).expand(-1, -1, hidden.size(-1)))
            loss, _ = mpu.vocab_parallel_output_cross_entropy(
                self._lm_head_input(picked), self.word_embeddings.weight, labels.gather(1, positions).clamp(min=0),
                loss_mask.gather(1, positions).float() / loss_tokens, self.text_vocab_size, bias=self.lm_bias)
            return loss, binary_logits
        lm_logits = F.linear(self._lm_head_input(hidden), self.word_embeddings.weight, self.lm_bias)
        if not self.parallel_output:
            lm_logits = mpu.gather_from_model_parallel_region(lm_logits)
        return lm_logits, binary_logits


class _Linear(torch.nn.Linear):
    """nn.Linear initialised in its own constructor (under ZeRO-3 a module is partitioned as soon as
    it is built, too late for its parent to initialise it)."""

    def __init__(self, inputs, outputs, init):
        super().__init__(inputs, outputs)
        init(self.weight)
        torch.nn.init.zeros_(self.bias)
