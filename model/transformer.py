"""A tensor-parallel transformer: self-attention and MLP split across ranks as in Megatron-LM, with the
GPT-Neo / GPT-NeoX choices of model.architecture.Architecture.

Attention heads are split across tensor-parallel ranks (the fused QKV projection is a
ColumnParallelLinear with stride 3, so rank r holds q, k and v of its heads); the MLP's first
projection is split by columns and its second by rows, so each block needs one all-reduce forward
and one backward. A gated MLP (GLU) projects to value and gate with stride 2, so each rank holds both
halves of its columns. Dropout on partitioned activations (attention probabilities) draws from the
model-parallel RNG stream; dropout on replicated activations from the default one.

Attention per layer is global (dense causal), local (causal within the last `attention_window`
positions, GPT-Neo's) or linear (GPT-Neo's causal linear attention: softmax feature map on queries,
exp on keys, running sums). Positions enter attention as rotary embeddings or ALiBi biases when the
architecture says so (model/positions.py); the embedding-level kinds (learned, axial) live in the model.
"""

import contextlib
import math

import torch
import torch.nn.functional as F

import mpu

from . import sliding_window
from .architecture import GLU_ACTIVATIONS, Architecture
from .moe import MoEMLP
from .normalization import make_norm
from .positions import alibi_bias, alibi_slopes, apply_rotary, rotary_cos_sin, rotary_dims

ACTIVATION_FUNCTIONS = {"gelu": F.gelu, "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"), "relu": F.relu,
                        "silu": F.silu, "selu": F.selu}


def init_normal(std):
    def init_(tensor):
        return torch.nn.init.normal_(tensor, mean=0.0, std=std)
    init_.std = std
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


def _in_blocks(tensor, block):
    """[..., seq, dim] -> [..., seq / block, block, dim], the sequence padded with zeros at its end."""
    pad = -tensor.size(-2) % block
    tensor = F.pad(tensor, (0, 0, 0, pad)) if pad else tensor
    return tensor.view(*tensor.shape[:-2], tensor.size(-2) // block, block, tensor.size(-1))


def causal_linear_attention(q, k, v, eps=1e-6, block=64):
    """GPT-Neo's causal linear attention over [batch, heads, seq, dim]: position t reads
    sum_i softmax(q_t)_i x (sum_{s<=t} exp(k_s,i) v_s) / (sum_{s<=t} exp(k_s,i) + eps).

    That is linear attention with query features p_t,i = softmax(q_t)_i / (sum_{s<=t} exp(k_s,i) + eps) and
    key features exp(k_s), computed in blocks: within a block a masked block x block product, across
    blocks a running [dim, dim] state, so time and memory grow with seq x (block + dim). Keys are shifted
    by their maximum m over the sequence before exp, and eps by exp(-m): nothing changes but exp cannot
    overflow."""
    seq = q.size(2)
    shift = k.float().amax(dim=2, keepdim=True)
    keys = torch.exp(k.float() - shift)
    queries = torch.softmax(q.float(), dim=-1) / (torch.cumsum(keys, dim=2) + eps * torch.exp(-shift))
    queries, keys, values = (_in_blocks(t, block) for t in (queries, keys, v.float()))
    causal = torch.ones(block, block, dtype=torch.bool, device=q.device).tril()
    within = (queries @ keys.transpose(-1, -2)).masked_fill(~causal, 0.0) @ values
    states = keys.transpose(-1, -2) @ values  # [..., blocks, dim, dim]
    before = torch.cumsum(states, dim=-3) - states
    out = within + queries @ before
    return out.reshape(*out.shape[:-3], -1, out.size(-1))[..., :seq, :].to(v.dtype)


def local_attention(q, k, v, window, dropout=0.0, scale=None):
    """Causal attention within the last `window` positions (a query sees itself and window - 1 before it):
    FlexAttention's sliding-window kernel on a GPU without dropout (model/sliding_window.py), else
    blocked_local_attention. Time and memory grow with seq x window, not seq^2."""
    if sliding_window.flex_runs_local_attention(q, dropout):
        return sliding_window.flex_local_attention(q, k, v, window, scale)
    return blocked_local_attention(q, k, v, window, dropout, scale)


def blocked_local_attention(q, k, v, window, dropout=0.0, scale=None):
    """local_attention in blocks of `window` queries that each read their own block of keys and the one
    before, through SDPA with a mask."""
    seq = q.size(2)
    q, k, v = (_in_blocks(t, window) for t in (q, k, v))
    k, v = (torch.cat([F.pad(t, (0, 0, 0, 0, 1, 0))[..., :-1, :, :], t], dim=-2) for t in (k, v))
    queries = torch.arange(window, 2 * window, device=q.device)[:, None]
    keys = torch.arange(2 * window, device=q.device)[None, :]
    allowed = ((keys <= queries) & (queries - keys < window)).expand(q.size(-3), window, 2 * window).clone()
    allowed[0, :, :window] = False  # the first block has no block before it
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout, scale=scale)
    return out.reshape(*out.shape[:-3], -1, out.size(-1))[..., :seq, :]


class ParallelSelfAttention(torch.nn.Module):
    def __init__(self, hidden_size, num_attention_heads, attention_dropout, output_dropout, init_method,
                 output_init_method, causal, architecture=Architecture(), attention_type="global"):
        super().__init__()
        world_size = mpu.get_model_parallel_world_size()
        self.head_dim = mpu.divide(hidden_size, num_attention_heads, "--hidden-size by --num-attention-heads")
        self.heads_here = mpu.divide(num_attention_heads, world_size,
                                     "--num-attention-heads by --model-parallel-size")
        self.causal, self.attention_dropout = causal, attention_dropout
        self.attention_type, self.window = attention_type, architecture.attention_window
        self.scale = None if architecture.scale_attention else 1.0
        self.rotary = (rotary_dims(self.head_dim, architecture.rotary_pct), architecture.rotary_emb_base) \
            if architecture.position_embedding_type == "rotary" else None
        if architecture.position_embedding_type == "alibi":
            first = mpu.get_model_parallel_rank() * self.heads_here
            self.register_buffer("alibi_slopes", alibi_slopes(num_attention_heads)[first:first + self.heads_here],
                                 persistent=False)
        else:
            self.alibi_slopes = None
        self.query_key_value = mpu.ColumnParallelLinear(hidden_size, 3 * hidden_size, gather_output=False,
                                                        init_method=init_method, stride=3,
                                                        bias=architecture.bias and architecture.qkv_bias)
        self.dense = mpu.RowParallelLinear(hidden_size, hidden_size, input_is_parallel=True,
                                           init_method=output_init_method, bias=architecture.bias)
        self.output_dropout = torch.nn.Dropout(output_dropout)

    def _mask(self, seq, past, attention_mask, device, dtype):
        """The attn_mask for SDPA, or None where is_causal (or nothing) says it all."""
        local, alibi = self.attention_type == "local", self.alibi_slopes is not None
        if not self.causal or not (local or alibi or past):
            return attention_mask
        queries = torch.arange(past, past + seq, device=device)
        keys = torch.arange(past + seq, device=device)
        allowed = keys[None, :] <= queries[:, None]
        if local:
            allowed &= queries[:, None] - keys[None, :] < self.window
        if attention_mask is not None:
            allowed = allowed & attention_mask
        if not alibi:
            return allowed
        return alibi_bias(self.alibi_slopes, queries, keys).to(dtype).unsqueeze(0).masked_fill(~allowed, float("-inf"))

    def forward(self, hidden, attention_mask=None, layer_cache=None, position_ids=None):
        """hidden [batch, seq, hidden]; attention_mask: None (causal or full) or a boolean
        [batch, 1, seq, seq] mask, True where attention is allowed; layer_cache: this layer's part of a
        model.KVCache, whose earlier positions the new ones attend to (causal models, generation);
        position_ids [batch, seq] for rotary embeddings (default: positions after the cache's)."""
        batch, seq, _ = hidden.shape
        q, k, v = (t.view(batch, seq, self.heads_here, self.head_dim).transpose(1, 2)
                   for t in self.query_key_value(hidden).chunk(3, dim=-1))
        past = 0 if layer_cache is None else layer_cache.past
        if self.rotary is not None:
            if position_ids is None:
                position_ids = torch.arange(past, past + seq, device=hidden.device).unsqueeze(0)
            cos, sin = rotary_cos_sin(position_ids, *self.rotary, q.dtype)
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if layer_cache is not None:
            k, v = layer_cache.extend(k, v)
        if self.attention_type == "linear":
            if attention_mask is not None:
                raise ValueError("linear attention keeps no mask: --reset-attention-mask needs global or local layers")
            context = causal_linear_attention(q if not past else torch.cat([q.new_zeros(batch, self.heads_here, past,
                                                                                        self.head_dim), q], 2), k, v)
            context = context[:, :, past:]
        else:
            blocked = self.attention_type == "local" and self.causal and seq > self.window and not past and \
                attention_mask is None and self.alibi_slopes is None
            mask = None if blocked else self._mask(seq, past, attention_mask, hidden.device, q.dtype)
            dropout = self.attention_dropout if self.training else 0.0
            with mpu.get_cuda_rng_tracker().fork() if dropout else contextlib.nullcontext():
                if blocked:
                    context = local_attention(q, k, v, self.window, dropout, self.scale)
                else:
                    context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout,
                                                             is_causal=self.causal and mask is None and past == 0,
                                                             scale=self.scale)
        context = context.transpose(1, 2).reshape(batch, seq, self.heads_here * self.head_dim)
        return self.output_dropout(self.dense(context))


class ParallelMLP(torch.nn.Module):
    """activation: gelu (exact, BERT), gelu_tanh (GPT-2's approximation, transformers' gelu_new), relu,
    silu, selu, or a gated form (swiglu, geglu, GPT-Neo's mlp_glu): value x activation(gate)."""

    def __init__(self, hidden_size, ffn_hidden_size, dropout, init_method, output_init_method, activation="gelu",
                 bias=True):
        super().__init__()
        self.gated = activation in GLU_ACTIVATIONS
        self.activation = ACTIVATION_FUNCTIONS[GLU_ACTIVATIONS.get(activation, activation)]
        up = mpu.ColumnParallelLinear(hidden_size, 2 * ffn_hidden_size if self.gated else ffn_hidden_size,
                                      gather_output=False, init_method=init_method, stride=2 if self.gated else 1,
                                      bias=bias)
        if self.gated:
            self.gated_h_to_4h = up
        else:
            self.dense_h_to_4h = up
        self.dense_4h_to_h = mpu.RowParallelLinear(ffn_hidden_size, hidden_size, input_is_parallel=True,
                                                   init_method=output_init_method, bias=bias)
        self.dropout = torch.nn.Dropout(dropout)

    def forward(self, hidden):
        if self.gated:
            value, gate = self.gated_h_to_4h(hidden).chunk(2, dim=-1)
            inner = value * self.activation(gate)
        else:
            inner = self.activation(self.dense_h_to_4h(hidden))
        return self.dropout(self.dense_4h_to_h(inner))


class ParallelTransformerLayer(torch.nn.Module):
    """Pre-norm (GPT-2: x + f(norm(x))), post-LayerNorm (original BERT: norm(x + f(x))), parallel residual
    (GPT-J/NeoX: x + attention(norm1(x)) + mlp(norm2(x))) or ReZero (x + g f(x), g a scalar from 0, no norm)."""

    def __init__(self, hidden_size, num_attention_heads, ffn_hidden_size, attention_dropout, hidden_dropout,
                 init_method, output_init_method, layernorm_epsilon, causal, pre_layernorm, architecture=Architecture(),
                 attention_type="global", mixture_of_experts=False):
        super().__init__()
        self.pre_layernorm, self.architecture = pre_layernorm, architecture
        if architecture.rezero:
            self.attention_rezero = torch.nn.Parameter(torch.zeros(1))  # not 0-d: DeepSpeed broadcasts bytes
            self.mlp_rezero = torch.nn.Parameter(torch.zeros(1))
        else:
            self.attention_layernorm = make_norm(architecture.normalization, hidden_size, layernorm_epsilon)
            self.mlp_layernorm = make_norm(architecture.normalization, hidden_size, layernorm_epsilon)
        self.attention = ParallelSelfAttention(hidden_size, num_attention_heads, attention_dropout, hidden_dropout,
                                               init_method, output_init_method, causal, architecture, attention_type)
        self.mlp = ParallelMLP(hidden_size, ffn_hidden_size, hidden_dropout, init_method, output_init_method,
                               architecture.activation, architecture.bias)
        if mixture_of_experts:
            stds = {"dense_4h_to_h.weight": output_init_method.std}
            self.mlp = MoEMLP(self.mlp, hidden_size, architecture.num_experts, architecture.moe_expert_parallel_size,
                              architecture.moe_top_k, architecture.moe_capacity_factor, architecture.moe_min_capacity,
                              seed=int(torch.randint(2 ** 31 - 1, ())),
                              init_stds=lambda name: stds.get(name, init_method.std))

    def forward(self, hidden, attention_mask=None, layer_cache=None, position_ids=None):
        def attention(x):
            return self.attention(x, attention_mask, layer_cache, position_ids)
        if self.architecture.rezero:
            hidden = hidden + self.attention_rezero * attention(hidden)
            return hidden + self.mlp_rezero * self.mlp(hidden)
        if not self.pre_layernorm:
            hidden = self.attention_layernorm(hidden + attention(hidden))
            return self.mlp_layernorm(hidden + self.mlp(hidden))
        if self.architecture.parallel_residual:
            return hidden + attention(self.attention_layernorm(hidden)) + self.mlp(self.mlp_layernorm(hidden))
        hidden = hidden + attention(self.attention_layernorm(hidden))
        return hidden + self.mlp(self.mlp_layernorm(hidden))


def _moe_mlps(layers):
    return [layer.mlp for layer in layers if isinstance(layer.mlp, MoEMLP)]


def layer_options(hidden_size, num_attention_heads, num_layers, attention_dropout, hidden_dropout, init_method_std,
                  ffn_hidden_size=None, layernorm_epsilon=1e-5, causal=True, pre_layernorm=True,
                  architecture=Architecture(), scaled_output_init=True):
    """ParallelTransformerLayer's keyword arguments for a layer of a stack of num_layers (with
    scaled_output_init its output projections are initialised with std / sqrt(2 x layers), as GPT-2's);
    the attention type is per layer (architecture.attention_type(i))."""
    output_std = init_method_std / math.sqrt(2.0 * num_layers) if scaled_output_init else init_method_std
    return dict(hidden_size=hidden_size, num_attention_heads=num_attention_heads,
                ffn_hidden_size=ffn_hidden_size or 4 * hidden_size, attention_dropout=attention_dropout,
                hidden_dropout=hidden_dropout, init_method=init_normal(init_method_std),
                output_init_method=init_normal(output_std), layernorm_epsilon=layernorm_epsilon, causal=causal,
                pre_layernorm=pre_layernorm, architecture=architecture)


class ParallelTransformer(torch.nn.Module):
    """A stack of layers; with checkpoint_activations, every checkpoint_num_layers layers are one
    `mpu.checkpoint` (deepspeed.checkpointing's when it is installed as mpu's implementation)."""

    def __init__(self, num_layers, hidden_size, num_attention_heads, attention_dropout, hidden_dropout,
                 init_method_std, ffn_hidden_size=None, layernorm_epsilon=1e-5, causal=True, pre_layernorm=True,
                 architecture=Architecture(), checkpoint_activations=False, checkpoint_num_layers=1, seed=None,
                 scaled_output_init=True):
        """seed: layer i is built under seeded(seed + i) (see `seeded`); None draws from torch as it is."""
        super().__init__()
        options = layer_options(hidden_size, num_attention_heads, num_layers, attention_dropout, hidden_dropout,
                                init_method_std, ffn_hidden_size, layernorm_epsilon, causal, pre_layernorm,
                                architecture, scaled_output_init)
        layers = []
        for number in range(num_layers):
            with seeded(None if seed is None else seed + number):
                layers.append(ParallelTransformerLayer(**options, attention_type=architecture.attention_type(number),
                                                       mixture_of_experts=number in architecture.moe_layers))
        self.layers = torch.nn.ModuleList(layers)
        self.final_layernorm = make_norm(architecture.normalization, hidden_size, layernorm_epsilon) \
            if pre_layernorm else None
        self.checkpoint_activations, self.checkpoint_num_layers = checkpoint_activations, checkpoint_num_layers

    def _run_layers(self, start, end, attention_mask, position_ids, with_balance_losses=False):
        """The function running layers start..end; with_balance_losses: it returns (hidden, the MoE layers'
        balance losses), so that a checkpointed segment hands them out through autograd."""
        def run(hidden):
            for layer in self.layers[start:end]:
                hidden = layer(hidden, attention_mask, position_ids=position_ids)
            if not with_balance_losses:
                return hidden
            return (hidden, *(moe.aux_loss for moe in _moe_mlps(self.layers[start:end])))
        return run

    def _checkpointed(self, start, end, hidden, attention_mask, position_ids):
        """Layers start..end as one activation checkpoint. Its forward runs without autograd, so an MoE
        layer's balance loss computed there has no graph: it leaves the checkpoint as an output instead,
        recomputed with the layers in backward, and is put back where moe_aux_loss reads it."""
        moes = _moe_mlps(self.layers[start:end])
        outputs = mpu.checkpoint(self._run_layers(start, end, attention_mask, position_ids, bool(moes)), hidden)
        if not moes:
            return outputs
        for moe, balance_loss in zip(moes, outputs[1:]):
            moe.aux_loss = balance_loss
        return outputs[0]

    def forward(self, hidden, attention_mask=None, cache=None, position_ids=None):
        """cache: a model.KVCache (inference), which each layer extends with the new positions."""
        if cache is not None:
            for number, layer in enumerate(self.layers):
                hidden = layer(hidden, attention_mask, cache.for_layer(number), position_ids)
        elif self.checkpoint_activations and self.training:
            for start in range(0, len(self.layers), self.checkpoint_num_layers):
                end = min(start + self.checkpoint_num_layers, len(self.layers))
                hidden = self._checkpointed(start, end, hidden, attention_mask, position_ids)
        else:
            hidden = self._run_layers(0, len(self.layers), attention_mask, position_ids)(hidden)
        return self.final_layernorm(hidden) if self.final_layernorm is not None else hidden
