"""GPT-2 built from mpu layers: pre-norm blocks, positions, output tied to the input embedding; with an
Architecture (model/architecture.py) the same model is GPT-Neo or GPT-NeoX.

Given a seed, its parts are built under seeds in the order of its pipeline form (model/gpt2_pipeline.py):
word embeddings seed, positions seed + 1, transformer layer i seed + 2 + i, an untied output embedding
seed + 3 + layers; so GPT2Model(seed=s) and the pipeline model with seed s hold the same weights.
"""

from typing import NamedTuple

import deepspeed
import torch
import torch.nn.functional as F

import mpu

from .architecture import Architecture
from .positions import axial_positions
from .transformer import ParallelTransformer, init_normal, seeded


class OutputLayerInput(NamedTuple):
    """What the output layer multiplies: the hidden states (through copy_to_model_parallel_region) and
    this rank's rows of its weight. language_model_loss makes the logits from them chunk by chunk."""
    hidden: torch.Tensor
    weight: torch.Tensor


class GPT2Model(torch.nn.Module):
    """tokens [batch, seq] -> logits [batch, seq, vocab / TP] (this rank's vocabulary slice), ready for
    mpu.vocab_parallel_cross_entropy; parallel_output=False gathers the full vocabulary. Given labels,
    the loss instead (language_model_loss; text_vocab_size: the real vocabulary, rows above it are
    padding): computed inside forward, where ZeRO-3 holds the output weight gathered."""

    def __init__(self, num_layers, vocab_size, hidden_size, num_attention_heads, max_sequence_length,
                 embedding_dropout=0.1, attention_dropout=0.1, hidden_dropout=0.1, init_method_std=0.02,
                 layernorm_epsilon=1e-5, checkpoint_activations=False, checkpoint_num_layers=1,
                 parallel_output=True, seed=None, ffn_hidden_size=None, architecture=Architecture(),
                 text_vocab_size=None):
        super().__init__()
        self.parallel_output, self.architecture, self.text_vocab_size = parallel_output, architecture, text_vocab_size
        self.max_sequence_length = max_sequence_length
        init = init_normal(init_method_std)
        with seeded(seed):
            self.word_embeddings = mpu.VocabParallelEmbedding(vocab_size, hidden_size, init_method=init)
        # parameters of this module, not nn.Embedding submodules: under ZeRO-3 a submodule's parameters are
        # partitioned as soon as the submodule is built, too early to initialise them here
        with seeded(None if seed is None else seed + 1):
            if architecture.learned_positions:
                self.position_embeddings = torch.nn.Parameter(init(torch.empty(max_sequence_length, hidden_size)))
            elif architecture.position_embedding_type == "axial":
                first, second = architecture.axial_pos_shape
                self.axial_position_embeddings_1 = torch.nn.Parameter(init(torch.empty(first, hidden_size)))
                self.axial_position_embeddings_2 = torch.nn.Parameter(init(torch.empty(second, hidden_size)))
        self.embedding_dropout = torch.nn.Dropout(embedding_dropout)
        self.transformer = ParallelTransformer(num_layers, hidden_size, num_attention_heads, attention_dropout,
                                               hidden_dropout, init_method_std, ffn_hidden_size=ffn_hidden_size,
                                               layernorm_epsilon=layernorm_epsilon, causal=True, pre_layernorm=True,
                                               architecture=architecture,
                                               checkpoint_activations=checkpoint_activations,
                                               checkpoint_num_layers=checkpoint_num_layers,
                                               seed=None if seed is None else seed + 2)
        if architecture.untie_embeddings:
            with seeded(None if seed is None else seed + 3 + num_layers):
                self.output_embeddings = mpu.ColumnParallelLinear(hidden_size, vocab_size, bias=False,
                                                                  gather_output=False, init_method=init)
        else:
            deepspeed.zero.register_external_parameter(self, self.word_embeddings.weight)  # tied output (ZeRO-3)

    def _positions(self, position_ids, end):
        if self.architecture.learned_positions:
            return F.embedding(position_ids, self.position_embeddings)
        if self.architecture.position_embedding_type == "axial":
            table = axial_positions(self.axial_position_embeddings_1, self.axial_position_embeddings_2, end)
            return F.embedding(position_ids, table)
        return None  # rotary and ALiBi act inside attention; none has no positions

    def forward(self, tokens, position_ids=None, cache=None, attention_mask=None, labels=None):
        """cache: a model.KVCache holding the positions before `tokens` (generation); it is extended
        with these. attention_mask: None (causal) or a boolean [batch, 1, seq, seq] mask, True where
        attention is allowed (model.documents). labels: (labels, loss mask, loss_tokens) for the loss."""
        past = 0 if cache is None else cache.length
        end = past + tokens.size(1)
        if end > self.max_sequence_length:
            raise ValueError(f"a sequence of {end} tokens is longer than --max-position-embeddings "
                             f"{self.max_sequence_length}")
        if position_ids is None:
            position_ids = torch.arange(past, end, device=tokens.device).unsqueeze(0)
        hidden = self.word_embeddings(tokens)
        positions = self._positions(position_ids, end)
        hidden = self.embedding_dropout(hidden if positions is None else hidden + positions)
        hidden = self.transformer(hidden, attention_mask=attention_mask, cache=cache, position_ids=position_ids)
        if cache is not None:
            cache.advance(tokens.size(1))
        output = self.output_embeddings.weight if self.architecture.untie_embeddings else self.word_embeddings.weight
        output_input = OutputLayerInput(mpu.copy_to_model_parallel_region(hidden), output)
        if labels is not None:
            return language_model_loss(output_input, labels, self.text_vocab_size)
        logits = F.linear(*output_input)
        return logits if self.parallel_output else mpu.gather_from_model_parallel_region(logits)


def language_model_loss(output, labels, vocab_size=None):
    """Cross-entropy of the output layer's vocabulary-parallel logits (made from an OutputLayerInput
    chunk by chunk, never whole: mpu.vocab_parallel_output_cross_entropy) where the loss mask is set,
    summed and divided by loss_tokens (training.py: the global batch's loss-bearing tokens per
    micro-batch, so the optimised loss is a mean over all of them). labels: (labels, loss mask,
    loss_tokens). vocab_size: the real vocabulary; padded rows take no probability (None: every row
    counts)."""
    labels, loss_mask, loss_tokens = labels
    loss, _ = mpu.vocab_parallel_output_cross_entropy(output.hidden, output.weight, labels,
                                                      loss_mask.float() / loss_tokens, vocab_size)
    return loss
