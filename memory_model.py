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
s x s scores kept): s b [e (4h + (4h + 2f) / t) + 2h m] bytes (layer-norm and linear inputs, q k v and the
attention output, the MLP's two inner activations, two dropout masks of m bytes an element): 34 s b h at
e = 2, m = 1, t = 1, f = 4h, their count less the 5 a s^2 b of the scores. A GPU's fused dropout keeps a
1-byte mask; a CPU's keeps its mask in the activations' type (m = e). On a CPU with attention dropout,
SDPA takes its math path and keeps the scores too: a / t s^2 b 3e (softmax output, mask, dropped
probabilities) and q and k scaled (2 s b h e / t) more. With activation checkpointing a layer keeps its
input (s b h e) and the one layer being recomputed holds the whole set. The output layer fused with its
loss keeps fp32 gradients of [tokens, h] and [vocabulary / t, h] (the logits never whole). Pipeline stages
keep the activations of up to `pipeline` micro-batches (1F1B) on the first stage.

The peak is the larger of two moments, each over what every step keeps (the parameters and optimizer
states; at ZeRO-3 also the gradient partition and its reduce bucket), with g the bytes of a gradient
element, Psi_r as above and B the reduce bucket (ds_config reduce_bucket_size, DeepSpeed's default 5e8):
- the end of the forward pass: the activations and the output layer's memory; at ZeRO-3 with Nd > 1 also
  the gathered parameters, which its traced prefetch keeps from forward to backward while their reuse is
  within stage3_max_reuse_distance (min(Psi_r, distance / 2) elements), and one prefetch bucket being
  gathered (stage3_prefetch_bucket_size);
- the gradient reduction at the end of the backward pass (the activations freed): ZeRO-0 holds every
  gradient and, with Nd > 1, its flat all-reduce copy (min(Psi_r, 5e8) elements); ZeRO-1/2 the contiguous
  bucket of gradients and its reduced copy (2 g min(Psi_r, B)); ZeRO-3 the reduce-scatter's flat buffer and
  its rearranged copy (2 g min(Psi_r, B)).
A GPU allocates a bucket whole (B elements, two with overlap_comm at ZeRO-1/2) and adds a fragmentation
allowance of 10% of the activations; a CPU touches only the pages it writes (min(Psi_r, B)). A CPU
process's prediction is its resident peak: the runtime already resident when the prediction is made
(Python, torch, DeepSpeed, the data) plus what DeepSpeed's engine and a ZeRO optimizer add when built
(ENGINE_RUNTIME, measured on a CPU with DeepSpeed 0.19), with freed memory returned to the system;
glibc's malloc keeps some of what is freed in its heaps (freed blocks up to 32 MB), which added 15-45% to
the resident peak at gpt2-124m's shape on 2 ranks, varying from step to step, unless
MALLOC_MMAP_THRESHOLD_ fixes its threshold (131072 here: freed blocks go back; the test sets it, and it cost
CPU training about 20% of its speed, so the scripts leave the default).
"""

import math
import re
from dataclasses import dataclass, replace

MIB, GIB = 2 ** 20, 2 ** 30
ALLREDUCE_BUCKET = 500_000_000  # ZeRO-0's flat all-reduce buffers, and the default reduce_bucket_size
ENGINE_RUNTIME = {"engine": 96 * 2 ** 20, "zero optimizer": 48 * 2 ** 20}  # resident on a CPU once built
FRAGMENTATION = 0.10
MOMENTS = {"forward": "end of the forward pass", "reduction": "gradient reduction"}  # where a peak can be
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
class Buckets:
    """The ds_config's zero_optimization sizes that set DeepSpeed's buffers, in elements (its defaults)."""
    reduce: int = ALLREDUCE_BUCKET
    overlap_comm: bool = False
    prefetch: int = 50_000_000
    reuse_distance: int = 1_000_000_000

    @classmethod
    def from_zero_config(cls, zero):
        return cls(int(zero.get("reduce_bucket_size", cls.reduce)),
                   bool(zero.get("overlap_comm", zero.get("stage") == 3)),
                   int(zero.get("stage3_prefetch_bucket_size", cls.prefetch)),
                   int(zero.get("stage3_max_reuse_distance", cls.reuse_distance)))


@dataclass(frozen=True)
class Layout:
    tensor: int = 1
    pipeline: int = 1
    data: int = 1
    zero_stage: int = 0
    micro_batch: int = 1
    checkpoint_activations: bool = False
    precision: str = "fp32"  # fp32, bf16 (fp32 weights under autocast), bf16-weights, fp16
    buckets: Buckets = Buckets()

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


def layout_from_args(args, data_parallel, zero_config):
    """The run's layout; zero_config: its ds_config's zero_optimization section."""
    return Layout(args.model_parallel_size, args.pipe_parallel_size, data_parallel, zero_config.get("stage", 0),
                  args.batch_size, bool(args.checkpoint_activations), precision_of_args(args),
                  Buckets.from_zero_config(zero_config))


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
    if _low_precision(layout):
        return {"parameters": 2 * psi / (nd if stage == 3 else 1), "gradients": 2 * psi / (nd if stage >= 2 else 1),
                "optimizer": 12 * psi / (nd if stage >= 1 else 1)}
    if stage == 0:
        return {"parameters": 4 * psi, "gradients": 4 * psi, "optimizer": 8 * psi}
    return {"parameters": 4 * psi / (nd if stage == 3 else 1), "gradients": 4 * psi / nd, "optimizer": 12 * psi / nd}


def activations(shape, layout, device="gpu"):
    """{layers, output layer} bytes one rank keeps for backward at its peak (see the module docstring)."""
    s, b, h, f, t = shape.seq_length, layout.micro_batch, shape.hidden, shape.ffn, layout.tensor
    e = ACTIVATION_BYTES[layout.precision]
    mask = e if device == "cpu" else 1
    whole_layer = s * b * (e * (4 * h + (4 * h + 2 * f) / t) + 2 * h * mask)
    if device == "cpu" and shape.attention_dropout > 0:  # SDPA's math path: softmax, mask, dropped; q and k scaled
        whole_layer += shape.heads / t * s * s * b * 3 * e + 2 * s * b * h / t * e
    layers = math.ceil(shape.layers / layout.pipeline)
    kept = layers * s * b * h * e + whole_layer if layout.checkpoint_activations else layers * whole_layer
    in_flight = layout.pipeline  # 1F1B: the first stage holds this many micro-batches
    output = 4 * (s * b * h + shape.vocabulary / t * h)
    return {"activations": kept * in_flight, "output layer": output}


def _low_precision(layout):
    return layout.precision in ("bf16-weights", "fp16")


def _buffer_elements(psi, bucket, count, device):
    """Elements of `count` buckets of `bucket` elements that a reduction of psi gradients occupies."""
    return count * bucket if device == "gpu" else min(psi, count * bucket)


def predicted_peak(shape, layout, device="gpu", runtime=0):
    """{part: bytes} at one rank's predicted peak (see the module docstring), "total" their sum, and "at"
    the moment it peaks (a key of MOMENTS); runtime: bytes already resident (a CPU process's interpreter and libraries,
    measured by the caller)."""
    psi, nd, stage = parameters_per_rank(shape, layout), layout.data, layout.zero_stage
    g, buckets = 2 if _low_precision(layout) else 4, layout.buckets
    states = model_states(shape, layout)
    kept = {"parameters": states["parameters"], "optimizer": states["optimizer"]}
    if stage == 3:
        kept["gradients"] = states["gradients"]
        kept["buffers"] = g * _buffer_elements(psi, buckets.reduce, 1, device)
    forward = activations(shape, layout, device)
    if stage == 3 and nd > 1:
        forward["gathered parameters"] = g * (min(psi, buckets.reuse_distance // 2) + min(psi, buckets.prefetch))
    if device == "gpu":
        forward["fragmentation"] = FRAGMENTATION * (forward["activations"] + forward["output layer"])
    if stage == 0:
        reduction = {"gradients": g * psi, "buffers": g * min(psi, ALLREDUCE_BUCKET) if nd > 1 else 0}
    elif stage in (1, 2):
        reduction = {"gradients": g * min(psi, buckets.reduce),
                     "buffers": g * _buffer_elements(psi, buckets.reduce, 2 if buckets.overlap_comm else 1, device)}
    else:
        reduction = {"buffers": 2 * g * min(psi, buckets.reduce)}
    at, moment = max((("forward", forward), ("reduction", reduction)), key=lambda item: sum(item[1].values()))
    parts = {**kept}
    for name, value in moment.items():
        parts[name] = parts.get(name, 0) + value
    if device == "cpu":
        parts["runtime"] = runtime + ENGINE_RUNTIME["engine"] + (ENGINE_RUNTIME["zero optimizer"] if stage else 0)
    parts["total"] = sum(parts.values())
    parts["at"] = at
    return parts


def describe(parts):
    """'N MiB at the end of the forward pass (parameters ..., gradients ..., ...)' of predicted_peak's parts."""
    return f"{parts['total'] / MIB:,.0f} MiB at the {MOMENTS[parts['at']]} (" + ", ".join(
        f"{name} {value / MIB:,.0f}" for name, value in parts.items() if name not in ("total", "at") and value) + ")"


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
