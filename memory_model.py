"""Predicted memory of one rank of a training layout, from the flags alone (before anything is built): the
one model of memory behind the start-up line and check of pretrain_gpt2.py / pretrain_bert.py,
scripts/plan_layout.py and benchmarks/memory.py.

Model states (ZeRO, Rajbhandari et al.), Psi_r the parameters one rank holds (its tensor-parallel slice
of its pipeline stage's layers, the largest stage):
- low-precision weights (--fp16, --bf16-weights): parameters 2 Psi_r, gradients 2 Psi_r, optimizer 12 Psi_r
  (fp32 master copy and two moments); ZeRO-1 divides the optimizer by the data-parallel size Nd, ZeRO-2
  also the gradients, ZeRO-3 also the parameters: 16, 4 + 12/Nd, 2 + 14/Nd, 16/Nd bytes a parameter;
- fp32 weights (fp32, and --bf16's autocast): parameters 4 Psi_r, gradients 4 Psi_r, optimizer 8 Psi_r (the
  moments); from ZeRO-1 on DeepSpeed keeps an fp32 master partition beside the weights (12/Nd with the
  moments) and partitions the gradients (4/Nd): 16, 4 + 16/Nd, 4 + 16/Nd, 20/Nd (measured: benchmarks/memory.py).

Activations a transformer layer keeps for backward, per micro-batch of b sequences of s tokens, hidden h,
MLP f, tensor-parallel size t, activation bytes e (4 fp32, 2 bf16/fp16, 3 under --bf16's autocast where
layer norms stay fp32), after Korthikanti et al. with attention by scaled_dot_product_attention (no
s x s scores kept): s b [e (4h + (4h + 2f) / t) + 2h] bytes (layer-norm and linear inputs, q k v and the
attention output, the MLP's two inner activations, two 1-byte dropout masks): 34 s b h at e = 2, t = 1,
f = 4h, their count less the 5 a s^2 b of the scores. On a CPU with attention dropout, SDPA takes its
math path and keeps the scores too: a / t s^2 b (2e + 1) more. With activation checkpointing a layer keeps its
input (s b h e) and the one layer being recomputed holds the whole set. The output layer fused with its
loss keeps fp32 gradients of [tokens, h] and [vocabulary / t, h] (the logits never whole). Pipeline stages
keep the activations of up to `pipeline` micro-batches (1F1B) on the first stage.

Buffers: DeepSpeed's gradient buckets, min(Psi_r, 5e8) gradient elements (its default bucket sizes).
A CPU process's prediction is its resident peak: the runtime already resident when the prediction is
made (Python, torch, DeepSpeed, the data) plus the above; a GPU's adds a fragmentation allowance of 10%.
"""

import math
import re
from dataclasses import dataclass, replace

MIB, GIB = 2 ** 20, 2 ** 30
BUCKET_ELEMENTS = 500_000_000  # DeepSpeed's reduce and allgather bucket sizes
FRAGMENTATION = 0.10
ACTIVATION_BYTES = {"fp32": 4, "bf16": 3, "bf16-weights": 2, "fp16": 2}


@dataclass(frozen=True)
class Shape:
    layers: int
    hidden: int
    heads: int
    ffn: int
    vocabulary: int  # padded
    seq_length: int
    positions: int  # learned position rows (0: rotary, ALiBi, none)
    bert: bool = False
    attention_dropout: float = 0.0


@dataclass(frozen=True)
class Layout:
    tensor: int = 1
    pipeline: int = 1
    data: int = 1
    zero_stage: int = 0
    micro_batch: int = 1
    checkpoint_activations: bool = False
    precision: str = "fp32"  # fp32, bf16 (fp32 weights under autocast), bf16-weights, fp16

    def describe(self):
        return (f"TP {self.tensor} x PP {self.pipeline} x DP {self.data}, ZeRO-{self.zero_stage}, micro batch "
                f"{self.micro_batch}, {'activation checkpointing, ' if self.checkpoint_activations else ''}"
                f"{self.precision}")


def shape_from_args(args, bert=False):
    from data_utils.tokenization import padded_vocab_size
    vocabulary = getattr(args, "padded_vocab_size", None) or padded_vocab_size(  # before a tokenizer: GPT-2's
        50257, args.make_vocab_size_divisible_by, args.model_parallel_size)
    learned = args.position_embedding_type in ("learned", None)
    return Shape(args.num_layers, args.hidden_size, args.num_attention_heads, args.ffn_hidden_size or 4 * args.hidden_size,
                 vocabulary, args.seq_length, args.max_position_embeddings if learned else 0, bert, args.attention_dropout)


def precision_of_args(args):
    if args.fp16:
        return "fp16"
    return "bf16-weights" if args.bf16_weights else "bf16" if args.bf16 else "fp32"


def layout_from_args(args, data_parallel, zero_stage):
    return Layout(args.model_parallel_size, args.pipe_parallel_size, data_parallel, zero_stage, args.batch_size,
                  bool(args.checkpoint_activations), precision_of_args(args))


def layer_parameters(shape):
    """(parameters split over tensor ranks, parameters each tensor rank holds whole) of one layer."""
    h, f = shape.hidden, shape.ffn
    return 4 * h * h + 2 * h * f + 3 * h + f, 6 * h


def parameters(shape):
    """Psi: all parameters of the model (a tied output layer once)."""
    split, whole = layer_parameters(shape)
    total = (shape.vocabulary + shape.positions) * shape.hidden + shape.layers * (split + whole) + 2 * shape.hidden
    if shape.bert:  # token types, pooler, the LM head's transform and bias, next-sentence head
        total += 2 * shape.hidden + (shape.hidden + 1) * shape.hidden * 2 + 2 * shape.hidden + shape.vocabulary + \
            2 * shape.hidden + 2
    return total


def parameters_per_rank(shape, layout):
    """Psi_r: the parameters of the fullest rank (the first pipeline stage, which holds the embeddings)."""
    split, whole = layer_parameters(shape)
    layers = math.ceil(shape.layers / layout.pipeline)
    first = shape.vocabulary * shape.hidden / layout.tensor + shape.positions * shape.hidden
    last = 2 * shape.hidden + (shape.vocabulary * shape.hidden / layout.tensor if layout.pipeline > 1 else 0)
    if shape.bert:
        last += (parameters(shape) - parameters(replace(shape, bert=False))) / layout.tensor
    edges = first + last if layout.pipeline == 1 else max(first, last)
    return int(edges + layers * (split / layout.tensor + whole))


def model_states(shape, layout):
    """{parameters, gradients, optimizer} bytes of one rank (see the module docstring)."""
    psi, nd, stage = parameters_per_rank(shape, layout), layout.data, layout.zero_stage
    if layout.precision in ("bf16-weights", "fp16"):
        return {"parameters": 2 * psi / (nd if stage == 3 else 1), "gradients": 2 * psi / (nd if stage >= 2 else 1),
                "optimizer": 12 * psi / (nd if stage >= 1 else 1)}
    if stage == 0:
        return {"parameters": 4 * psi, "gradients": 4 * psi, "optimizer": 8 * psi}
    return {"parameters": 4 * psi / (nd if stage == 3 else 1), "gradients": 4 * psi / nd, "optimizer": 12 * psi / nd}


def activations(shape, layout, device="gpu"):
    """{layers, output layer} bytes one rank keeps for backward at its peak (see the module docstring)."""
    s, b, h, f, t = shape.seq_length, layout.micro_batch, shape.hidden, shape.ffn, layout.tensor
    e = ACTIVATION_BYTES[layout.precision]
    whole_layer = s * b * (e * (4 * h + (4 * h + 2 * f) / t) + 2 * h)
    if device == "cpu" and shape.attention_dropout > 0:  # SDPA's math path: scores, softmax, dropout mask
        whole_layer += shape.heads / t * s * s * b * (2 * e + 1)
    layers = math.ceil(shape.layers / layout.pipeline)
    kept = layers * s * b * h * e + whole_layer if layout.checkpoint_activations else layers * whole_layer
    in_flight = layout.pipeline  # 1F1B: the first stage holds this many micro-batches
    output = 4 * (s * b * h + shape.vocabulary / t * h)
    return {"activations": kept * in_flight, "output layer": output}


def predicted_peak(shape, layout, device="gpu", runtime=0):
    """{part: bytes} of one rank's predicted peak and "total"; runtime: bytes already resident (a CPU
    process's interpreter and libraries, measured by the caller)."""
    parts = {**model_states(shape, layout), **activations(shape, layout, device)}
    parts["buffers"] = min(parameters_per_rank(shape, layout), BUCKET_ELEMENTS) * (
        2 if layout.precision in ("bf16-weights", "fp16") else 4)
    if device == "cpu":
        parts["runtime"] = runtime
    else:
        parts["fragmentation"] = FRAGMENTATION * (parts["activations"] + parts["output layer"])
    parts["total"] = sum(parts.values())
    return parts


def describe(parts):
    """'N MiB (parameters ..., gradients ..., ...)' of predicted_peak's parts."""
    return f"{parts['total'] / MIB:,.0f} MiB (" + ", ".join(
        f"{name} {value / MIB:,.0f}" for name, value in parts.items() if name != "total") + ")"


def parse_bytes(text):
    """'80GB', '80 GiB', '512MB', '1.5TB' or a number of bytes -> bytes (GB and GiB alike: 2^30)."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*([KMGT]?)(?:i?B)?\s*", str(text), re.IGNORECASE)
    if not match:
        raise ValueError(f"{text!r}: a size such as 80GB, 512MiB or a number of bytes")
    return int(float(match.group(1)) * 1024 ** " KMGT".index(match.group(2).upper() or " "))


def fitting_layouts(shape, layout, device, limit, runtime=0):
    """(layout, predicted bytes) at the same parallel sizes and global batch predicted to fit `limit`: other
    ZeRO stages (0-1 with pipeline stages), activation checkpointing, smaller micro-batches (more
    accumulation); the least changed first, and of those the one closest to the limit (the least
    partitioning and recomputation that fits)."""
    stages = range(2 if layout.pipeline > 1 else 4)
    batches = [b for b in range(layout.micro_batch, 0, -1) if layout.micro_batch % b == 0]
    found = []
    for stage in stages:
        for checkpointing in (layout.checkpoint_activations, True):
            for batch in batches:
                candidate = replace(layout, zero_stage=stage, checkpoint_activations=checkpointing, micro_batch=batch)
                total = predicted_peak(shape, candidate, device, runtime)["total"]
                if total <= limit:
                    changes = (stage != layout.zero_stage) + (checkpointing != layout.checkpoint_activations) + (
                        batch != layout.micro_batch)
                    found.append((changes, total, candidate))
    return [(candidate, total) for _, total, candidate in sorted(found, key=lambda item: (item[0], -item[1]))]


def flags_for(layout, before, accumulation=1):
    """The flags that turn layout `before` (at `accumulation` micro-batches a step) into `layout`, at the
    same global batch."""
    flags = []
    if layout.zero_stage != before.zero_stage:
        flags += ["--zero-stage", str(layout.zero_stage)]
    if layout.checkpoint_activations and not before.checkpoint_activations:
        flags.append("--checkpoint-activations")
    if layout.micro_batch != before.micro_batch:
        flags += ["--batch-size", str(layout.micro_batch), "--gradient-accumulation-steps",
                  str(accumulation * before.micro_batch // layout.micro_batch)]
    return " ".join(flags)


def resident_bytes():
    """This process's resident memory now."""
    import psutil
    return psutil.Process().memory_info().rss


def peak_bytes(device):
    """What this rank has peaked at: the allocator's maximum on a GPU, the process's peak RSS on a CPU."""
    if device != "cpu":
        import torch
        return torch.cuda.max_memory_allocated()
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
