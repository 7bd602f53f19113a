"""The choices that make GPT-2, GPT-Neo and GPT-NeoX one transformer, set by flags (model.transformer
builds them; no second model stack).

GPT-2 is the default: dense causal attention scaled by 1/sqrt(head size), learned positions, GeLU
(tanh approximation), LayerNorm, sequential pre-LayerNorm residuals, biases, output tied to the input
embedding. GPT-Neo alternates global and local (sliding-window) attention and does not scale its
attention scores; GPT-NeoX uses rotary positions on a fraction of each head, exact GeLU, parallel
residuals and an untied output embedding.
"""

import dataclasses
import json

ATTENTION_TYPES = ("global", "local", "linear")
POSITION_EMBEDDING_TYPES = ("learned", "rotary", "alibi", "axial", "none")
ACTIVATIONS = ("gelu", "gelu_tanh", "relu", "silu", "selu", "swiglu", "geglu", "mlp_glu")
GLU_ACTIVATIONS = {"swiglu": "silu", "geglu": "gelu", "mlp_glu": "gelu_tanh"}  # gated form -> its gate's activation
NORMALIZATIONS = ("layernorm", "rmsnorm", "scalenorm")


@dataclasses.dataclass(frozen=True)
class Architecture:
    attention_types: tuple = ("global",)  # cycled over the layers
    attention_window: int = 256
    scale_attention: bool = True
    position_embedding_type: str = "learned"
    rotary_pct: float = 1.0
    rotary_emb_base: float = 10000.0
    axial_pos_shape: tuple = None
    activation: str = "gelu_tanh"
    normalization: str = "layernorm"
    rezero: bool = False
    parallel_residual: bool = False
    bias: bool = True
    qkv_bias: bool = True
    untie_embeddings: bool = False
    moe_layers: tuple = ()  # layer numbers whose MLP is a mixture of experts (model/moe.py)
    num_experts: int = 1
    moe_top_k: int = 1
    moe_capacity_factor: float = 1.0
    moe_min_capacity: int = 4
    moe_expert_parallel_size: int = 1

    def attention_type(self, layer):
        return self.attention_types[layer % len(self.attention_types)]

    @property
    def learned_positions(self):
        return self.position_embedding_type == "learned"


def parse_moe_layers(values, num_layers):
    """--moe-layers: `every:K` (layers K-1, 2K-1, ...: every K-th) or layer numbers from 0."""
    if len(values) == 1 and values[0].startswith("every:"):
        try:
            every = int(values[0][len("every:"):])
        except ValueError:
            every = 0
        if every < 1:
            raise ValueError(f"--moe-layers {values[0]}: expected every:K with K >= 1")
        return tuple(range(every - 1, num_layers, every))
    try:
        layers = tuple(sorted({int(value) for value in values}))
    except ValueError:
        raise ValueError(f"--moe-layers {' '.join(values)}: expected every:K or layer numbers") from None
    if layers and not 0 <= layers[0] <= layers[-1] < num_layers:
        raise ValueError(f"--moe-layers {' '.join(values)}: layers are numbered 0 to {num_layers - 1}")
    return layers


def parse_attention_types(text, num_layers):
    """GPT-Neo's form `[[["global", "local"], 12]]` (a pattern repeated n times) or words, `global local`
    (repeated to fill the layers) -> one type per layer."""
    text = text.strip()
    if text.startswith("["):
        try:
            groups = json.loads(text)
            types = [kind for pattern, repeat in groups for _ in range(repeat) for kind in pattern]
        except (ValueError, TypeError) as error:
            raise ValueError(f"--attention-types {text}: not GPT-Neo's [[[\"global\", \"local\"], 12]] form "
                             f"({error})") from None
        if len(types) != num_layers:
            raise ValueError(f"--attention-types {text} names {len(types)} layers; the model has {num_layers}")
    else:
        words = text.replace(",", " ").split()
        types = [words[i % len(words)] for i in range(num_layers)] if words else []
    unknown = sorted(set(types) - set(ATTENTION_TYPES))
    if unknown or not types:
        raise ValueError(f"--attention-types {text}: expected {', '.join(ATTENTION_TYPES)}, got {unknown or 'nothing'}")
    return tuple(types)


# The flags (arguments.add_architecture_args) an Architecture is made of; checkpoints save them with the
# other flags, and evaluation reads them back.
ARCHITECTURE_FLAGS = ("attention_types", "attention_window", "no_attention_scaling", "position_embedding_type",
                      "rotary_pct", "rotary_emb_base", "axial_pos_shape", "activation", "normalization", "rezero",
                      "parallel_residual", "no_bias", "no_qkv_bias", "untie_embeddings", "moe_layers", "num_experts",
                      "moe_top_k", "moe_capacity_factor", "moe_min_capacity", "moe_expert_parallel_size")


def architecture_from_args(args):
    axial = args.axial_pos_shape
    return Architecture(attention_types=parse_attention_types(args.attention_types, args.num_layers),
                        attention_window=args.attention_window, scale_attention=not args.no_attention_scaling,
                        position_embedding_type=args.position_embedding_type, rotary_pct=args.rotary_pct,
                        rotary_emb_base=args.rotary_emb_base, axial_pos_shape=tuple(axial) if axial else None,
                        activation=args.activation, normalization=args.normalization, rezero=args.rezero,
                        parallel_residual=args.parallel_residual, bias=not args.no_bias,
                        qkv_bias=not args.no_qkv_bias, untie_embeddings=args.untie_embeddings,
                        moe_layers=parse_moe_layers(args.moe_layers, args.num_layers) if args.num_experts > 1 else (),
                        num_experts=args.num_experts, moe_top_k=args.moe_top_k,
                        moe_capacity_factor=args.moe_capacity_factor, moe_min_capacity=args.moe_min_capacity,
                        moe_expert_parallel_size=args.moe_expert_parallel_size)
