"""GPT-2 as a deepspeed.pipe.PipelineModule, for pipeline parallelism (--pipe-parallel-size > 1).

The same parameters as GPT2Model, as a list of layers that DeepSpeed's pipeline engine partitions
into stages:

    0        word embeddings (tied with L + 3: one weight, its gradient summed over both stages)
    1        positions, embedding dropout
    2..L+1   transformer layers
    L+2      final LayerNorm
    L+3      the output layer's input and the word embeddings (the loss makes the logits)

Layer i is built under seed + i, as GPT2Model(seed=seed) builds its parts, so the model is the same
at any number of stages. Tensor parallelism works inside every layer as in GPT2Model; the topology
is mpu's (tensor fastest, then data, then pipeline).
"""

import functools

import torch
from deepspeed.pipe import LayerSpec, PipelineModule, TiedLayerSpec
from deepspeed.runtime.pipe.topology import PipeModelDataParallelTopology

import mpu

from .architecture import Architecture
from .gpt2_model import OutputLayerInput, language_model_loss
from .normalization import NORMS
from .transformer import ParallelTransformerLayer, init_normal, layer_options, seeded


class WordEmbeddingPipe(torch.nn.Module):
    def __init__(self, vocab_size, hidden_size, init_method_std):
        super().__init__()
        self.word_embeddings = mpu.VocabParallelEmbedding(vocab_size, hidden_size,
                                                          init_method=init_normal(init_method_std))

    def forward(self, tokens):
        return self.word_embeddings(tokens)

    def output_layer_input(self, hidden):
        """The output layer's input and this rank's rows of its weight, for language_model_loss."""
        return OutputLayerInput(mpu.copy_to_model_parallel_region(hidden), self.word_embeddings.weight)


class PositionEmbeddingPipe(torch.nn.Module):
    """Learned positions and the embedding dropout; dropout alone where positions act inside attention
    (rotary, ALiBi) or there are none."""

    def __init__(self, max_sequence_length, hidden_size, init_method_std, dropout, learned=True):
        super().__init__()
        if learned:
            self.position_embeddings = torch.nn.Parameter(
                init_normal(init_method_std)(torch.empty(max_sequence_length, hidden_size)))
        else:
            self.position_embeddings = None
        self.dropout = torch.nn.Dropout(dropout)

    def forward(self, embeddings):
        if self.position_embeddings is not None:
            embeddings = embeddings + self.position_embeddings[:embeddings.size(1)].unsqueeze(0)
        return self.dropout(embeddings)


class _SeededBuild:
    """A layer spec whose module is built under its own seed."""

    def seeded_with(self, seed):
        self.seed = seed
        return self

    def build(self, log=False):
        with seeded(self.seed):
            return super().build(log)


class _SeededLayerSpec(_SeededBuild, LayerSpec):
    pass


class _SeededTiedLayerSpec(_SeededBuild, TiedLayerSpec):
    pass


def _output_layer_input(module, hidden):
    return module.output_layer_input(hidden)


def gpt2_pipeline(num_layers, vocab_size, hidden_size, num_attention_heads, max_sequence_length, seed,
                  embedding_dropout=0.1, attention_dropout=0.1, hidden_dropout=0.1, init_method_std=0.02,
                  layernorm_epsilon=1e-5, checkpoint_activations=False, checkpoint_num_layers=1,
                  partition_method="parameters", text_vocab_size=None, ffn_hidden_size=None,
                  architecture=Architecture()):
    """The PipelineModule over mpu's groups: input tokens, labels (labels, loss mask, loss tokens),
    model.language_model_loss (text_vocab_size: the real vocabulary, rows above it are padding). Axial
    positions and an untied output embedding have no pipeline form (arguments.py refuses them)."""
    options = layer_options(hidden_size, num_attention_heads, num_layers, attention_dropout, hidden_dropout,
                            init_method_std, ffn_hidden_size, layernorm_epsilon=layernorm_epsilon, causal=True,
                            pre_layernorm=True, architecture=architecture)
    embedding = ("embed", WordEmbeddingPipe, vocab_size, hidden_size, init_method_std)
    tied = {"tied_weight_attr": "word_embeddings.weight"}
    layers = [(_SeededTiedLayerSpec, embedding, tied),
              (_SeededLayerSpec, (PositionEmbeddingPipe, max_sequence_length, hidden_size, init_method_std,
                                  embedding_dropout, architecture.learned_positions), {}),
              *[(_SeededLayerSpec, (ParallelTransformerLayer,), {**options, "attention_type": architecture.attention_type(i)})
                for i in range(num_layers)],
              (_SeededLayerSpec, (NORMS[architecture.normalization], hidden_size), {"eps": layernorm_epsilon}),
              (_SeededTiedLayerSpec, embedding, {**tied, "forward_fn": _output_layer_input})]
    specs = [spec(*args, **kwargs).seeded_with(seed + index) for index, (spec, args, kwargs) in enumerate(layers)]
    topology = PipeModelDataParallelTopology(num_pp=mpu.get_pipeline_model_parallel_world_size(),
                                             num_mp=mpu.get_model_parallel_world_size(),
                                             num_dp=mpu.get_data_parallel_world_size())
    loss = functools.partial(language_model_loss, vocab_size=text_vocab_size)
    return PipelineModule(specs, topology=topology, loss_fn=loss, partition_method=partition_method,
                          activation_checkpoint_interval=checkpoint_num_layers if checkpoint_activations else 0,
                          activation_checkpoint_func=mpu.checkpoint, checkpointable_layers=["ParallelTransformerLayer"])


def gpt2_name(layer_index, name, num_layers):
    """GPT2Model's name of parameter `name` of pipeline layer `layer_index` (a pipeline checkpoint's
    layer_II files and the PipelineModule's '{index}.{name}' parameters)."""
    if layer_index == num_layers + 2:
        return "transformer.final_layernorm." + name
    if 2 <= layer_index < num_layers + 2:
        return f"transformer.layers.{layer_index - 2}.{name}"
    return name


def gpt2_name_of_pipeline_parameter(name, num_layers):
    """GPT2Model's name of a PipelineModule parameter ('tied_modules.embed.word_embeddings.weight',
    '3.attention.dense.weight')."""
    head, rest = name.split(".", 1)
    if head == "tied_modules":
        return rest.split(".", 1)[1]
    return gpt2_name(int(head), rest, num_layers)


def gpt2_state_from_layers(layer_states, num_layers):
    """GPT2Model's state dict (of one tensor-parallel rank) from the pipeline's per-layer state dicts
    {layer index: state dict}, as a pipeline checkpoint holds them."""
    return {gpt2_name(index, name, num_layers): tensor
            for index, layer_state in layer_states.items() for name, tensor in layer_state.items()}
