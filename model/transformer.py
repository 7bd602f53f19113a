"""A tensor-parallel transformer: self-attention and MLP split across ranks as in Megatron-LM.

Attention heads are split across tensor-parallel ranks (the fused QKV projection is a
ColumnParallelLinear with stride 3, so rank r holds q, k and v of its heads); the MLP's first
projection is split by columns and its second by rows, so each block needs one all-reduce forward
and one backward. Dropout on partitioned activations (attention probabilities) draws from the
model-parallel RNG stream; dropout on replicated activations from the default one.
"""

import contextlib
import math

import torch
import torch.nn.functional as F

import mpu

from .layernorm import LayerNorm


def init_normal(std):
    def init_(tensor):
        return torch.nn.init.normal_(tensor, mean=0.0, std=std)
    return init_


@contextlib.contextmanager
def seeded(seed):
    """Draw the initial weights built inside from torch's CPU generator seeded with `seed` (None: as it
    is), leaving its state outside unchanged. A model whose parts are each built under their own seed
    is the same model however its parts are spread over pipeline stages."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


class ParallelSelfAttention(torch.nn.Module):
    def __init__(self, hidden_size, num_attention_heads, attention_dropout, output_dropout, init_method,
                 output_init_method, causal):
        super().__init__()
        world_size = mpu.get_model_parallel_world_size()
        self.head_dim = mpu.divide(hidden_size, num_attention_heads, "--hidden-size by --num-attention-heads")
        self.heads_here = mpu.divide(num_attention_heads, world_size,
                                     "--num-attention-heads by --model-parallel-size")
        self.causal, self.attention_dropout = causal, attention_dropout
        self.query_key_value = mpu.ColumnParallelLinear(hidden_size, 3 * hidden_size, gather_output=False,
                                                        init_method=init_method, stride=3)
        self.dense = mpu.RowParallelLinear(hidden_size, hidden_size, input_is_parallel=True,
                                           init_method=output_init_method)
        self.output_dropout = torch.nn.Dropout(output_dropout)

    def forward(self, hidden, attention_mask=None, layer_cache=None):
        """hidden [batch, seq, hidden]; attention_mask: None (causal or full) or a boolean
        [batch, 1, seq, seq] mask, True where attention is allowed; layer_cache: this layer's part of a
        model.KVCache, whose earlier positions the new ones attend to (causal models, generation)."""
        batch, seq, _ = hidden.shape
        q, k, v = (t.view(batch, seq, self.heads_here, self.head_dim).transpose(1, 2)
                   for t in self.query_key_value(hidden).chunk(3, dim=-1))
        past = 0
        if layer_cache is not None:
            past = layer_cache.past
            k, v = layer_cache.extend(k, v)
        is_causal = self.causal and attention_mask is None and past == 0
        if self.causal and attention_mask is None and past and seq > 1:  # the past, and each other causally
            attention_mask = torch.ones(seq, past + seq, dtype=torch.bool, device=hidden.device).tril(past)
        dropout = self.attention_dropout if self.training else 0.0
        with mpu.get_cuda_rng_tracker().fork() if dropout else contextlib.nullcontext():
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask, dropout_p=dropout,
                                                     is_causal=is_causal)
        context = context.transpose(1, 2).reshape(batch, seq, self.heads_here * self.head_dim)
        return self.output_dropout(self.dense(context))


class ParallelMLP(torch.nn.Module):
    """gelu="tanh" is GPT-2's approximation (OpenAI's and transformers' gelu_new); "none" is exact (BERT)."""

    def __init__(self, hidden_size, ffn_hidden_size, dropout, init_method, output_init_method, gelu="none"):
        super().__init__()
        self.gelu_approximation = gelu
        self.dense_h_to_4h = mpu.ColumnParallelLinear(hidden_size, ffn_hidden_size, gather_output=False,
                                                      init_method=init_method)
        self.dense_4h_to_h = mpu.RowParallelLinear(ffn_hidden_size, hidden_size, input_is_parallel=True,
                                                   init_method=output_init_method)
        self.dropout = torch.nn.Dropout(dropout)

    def forward(self, hidden):
        return self.dropout(self.dense_4h_to_h(F.gelu(self.dense_h_to_4h(hidden), approximate=self.gelu_approximation)))


class ParallelTransformerLayer(torch.nn.Module):
    """Pre-LayerNorm (GPT-2: x + f(LN(x))) or post-LayerNorm (original BERT: LN(x + f(x)))."""

    def __init__(self, hidden_size, num_attention_heads, ffn_hidden_size, attention_dropout, hidden_dropout,
                 init_method, output_init_method, layernorm_epsilon, causal, pre_layernorm, gelu):
        super().__init__()
        self.pre_layernorm = pre_layernorm
        self.attention_layernorm = LayerNorm(hidden_size, eps=layernorm_epsilon)
        self.attention = ParallelSelfAttention(hidden_size, num_attention_heads, attention_dropout, hidden_dropout,
                                               init_method, output_init_method, causal)
        self.mlp_layernorm = LayerNorm(hidden_size, eps=layernorm_epsilon)
        self.mlp = ParallelMLP(hidden_size, ffn_hidden_size, hidden_dropout, init_method, output_init_method, gelu)

    def forward(self, hidden, attention_mask=None, layer_cache=None):
        if self.pre_layernorm:
            hidden = hidden + self.attention(self.attention_layernorm(hidden), attention_mask, layer_cache)
            return hidden + self.mlp(self.mlp_layernorm(hidden))
        hidden = self.attention_layernorm(hidden + self.attention(hidden, attention_mask, layer_cache))
        return self.mlp_layernorm(hidden + self.mlp(hidden))


def layer_options(hidden_size, num_attention_heads, num_layers, attention_dropout, hidden_dropout, init_method_std,
                  ffn_hidden_size=None, layernorm_epsilon=1e-5, causal=True, pre_layernorm=True, gelu="none",
                  scaled_output_init=True):
    """ParallelTransformerLayer's keyword arguments for layer of a stack of num_layers (with
    scaled_output_init its output projections are initialised with std / sqrt(2 x layers), as GPT-2's)."""
    output_std = init_method_std / math.sqrt(2.0 * num_layers) if scaled_output_init else init_method_std
    return dict(hidden_size=hidden_size, num_attention_heads=num_attention_heads,
                ffn_hidden_size=ffn_hidden_size or 4 * hidden_size, attention_dropout=attention_dropout,
                hidden_dropout=hidden_dropout, init_method=init_normal(init_method_std),
                output_init_method=init_normal(output_std),
                layernorm_epsilon=layernorm_epsilon, causal=causal, pre_layernorm=pre_layernorm, gelu=gelu)


class ParallelTransformer(torch.nn.Module):
    """A stack of layers; with checkpoint_activations, every checkpoint_num_layers layers are one
    `mpu.checkpoint` (deepspeed.checkpointing's when it is installed as mpu's implementation)."""

    def __init__(self, num_layers, hidden_size, num_attention_heads, attention_dropout, hidden_dropout,
                 init_method_std, ffn_hidden_size=None, layernorm_epsilon=1e-5, causal=True, pre_layernorm=True,
                 gelu="none", checkpoint_activations=False, checkpoint_num_layers=1, seed=None,
                 scaled_output_init=True):
        """seed: layer i is built under seeded(seed + i) (see `seeded`); None draws from torch as it is."""
        super().__init__()
        layers = []
        for number in range(num_layers):
            with seeded(None if seed is None else seed + number):
                layers.append(ParallelTransformerLayer(**layer_options(
                    hidden_size, num_attention_heads, num_layers, attention_dropout, hidden_dropout, init_method_std,
                    ffn_hidden_size, layernorm_epsilon, causal, pre_layernorm, gelu, scaled_output_init)))
        self.layers = torch.nn.ModuleList(layers)
        self.final_layernorm = LayerNorm(hidden_size, eps=layernorm_epsilon) if pre_layernorm else None
        self.checkpoint_activations, self.checkpoint_num_layers = checkpoint_activations, checkpoint_num_layers

    def _run_layers(self, start, end):
        def run(hidden, attention_mask=None):
            for layer in self.layers[start:end]:
                hidden = layer(hidden, attention_mask)
            return hidden
        return run

    def forward(self, hidden, attention_mask=None, cache=None):
        """cache: a model.KVCache (inference), which each layer extends with the new positions."""
        if cache is not None:
            for number, layer in enumerate(self.layers):
                hidden = layer(hidden, attention_mask, cache.for_layer(number))
        elif self.checkpoint_activations and self.training:
            for start in range(0, len(self.layers), self.checkpoint_num_layers):
                end = min(start + self.checkpoint_num_layers, len(self.layers))
                args = (hidden,) if attention_mask is None else (hidden, attention_mask)
                hidden = mpu.checkpoint(self._run_layers(start, end), *args)
        else:
            hidden = self._run_layers(0, len(self.layers))(hidden, attention_mask)
        return self.final_layernorm(hidden) if self.final_layernorm is not None else hidden
