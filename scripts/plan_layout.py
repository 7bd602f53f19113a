"""Which layout fits, and which is fastest: every tensor x pipeline x data-parallel x ZeRO stage x micro-batch
x activation-checkpointing choice for a model on N GPUs, its predicted memory per GPU (memory_model.py) and
step time, the fitting ones ordered by predicted tokens/s, and the command line of the best.

    python scripts/plan_layout.py --model-size gpt2-1.3b --seq-length 2048 --global-batch-size 512 --bf16 \\
        --gpus 8 --gpus-per-node 8 --gpu-memory 80GB
    python scripts/plan_layout.py --model-size gpt-neox-20b --gpus 64 --gpus-per-node 8 --json
    python scripts/plan_layout.py --model-size tiny --gpus 2 --device-memory 2GB      # CPU ranks

The step time is a roofline: the model's FLOPs (6 x parameters x tokens, 8 x with activation
checkpointing, plus attention's 12 x layers x hidden x sequence per token) at --gpu-tflops x --efficiency,
stretched by the pipeline bubble ((stages - 1) / micro-batches per step), plus communication that does not
overlap compute: tensor parallelism's all-reduces of each layer's activations (4 a micro-batch forward
and backward) over NVLink (--intra-node-bandwidth) when its group stays in a node, the data-parallel
gradient reduction (x1.5 at ZeRO-3 for the parameter gathers) and pipeline sends over the slowest link
its group crosses. Defaults are H100 SXM nodes (printed). --why lists the layouts left out and why.
"""

import json
import os
import sys
from dataclasses import asdict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from arguments import get_args  # noqa: E402
from memory_model import GIB, Layout, parameters, parse_bytes, precision_of_args, predicted_peak, shape_from_args  # noqa: E402

MAX_MICRO_BATCH = 32


def add_plan_args(parser):
    group = parser.add_argument_group("the machines")
    group.add_argument("--gpus", type=int, required=True, help="devices in all")
    group.add_argument("--gpus-per-node", type=int, default=8)
    group.add_argument("--gpu-memory", default="80GB", help="memory of one device")
    group.add_argument("--gpu-tflops", type=float, default=989.0, help="dense bf16/fp16 peak of one device (H100 SXM)")
    group.add_argument("--efficiency", type=float, default=0.5, help="share of the peak the matrix products reach")
    group.add_argument("--intra-node-bandwidth", type=float, default=450.0, help="GB/s a device sends in a node (NVLink)")
    group.add_argument("--inter-node-bandwidth", type=float, default=50.0,
                       help="GB/s a device sends across nodes (400 Gb/s InfiniBand per GPU)")
    group.add_argument("--json", action="store_true", help="print the layouts as JSON")
    group.add_argument("--why", action="store_true", help="also list the layouts left out, with the reason")
    group.add_argument("--top", type=int, default=15, help="rows of the table")
    return parser


def _divisors(n):
    return [d for d in range(1, n + 1) if n % d == 0]


def candidates(args, shape):
    """(layout, reason left out or None) of every choice."""
    precision = precision_of_args(args)
    for tensor in _divisors(args.gpus):
        for pipeline in _divisors(args.gpus // tensor):
            data = args.gpus // (tensor * pipeline)
            for stage in range(4):
                for micro in _divisors(MAX_MICRO_BATCH):
                    for checkpointing in (False, True):
                        layout = Layout(tensor, pipeline, data, stage, micro, checkpointing, precision)
                        yield layout, _reason(args, shape, layout)


def _reason(args, shape, layout):
    if shape.heads % layout.tensor or shape.hidden % layout.tensor:
        return f"{shape.heads} heads / hidden {shape.hidden} do not split over {layout.tensor} tensor ranks"
    if layout.tensor > args.gpus_per_node:
        return "a tensor-parallel group larger than a node"
    if shape.layers % layout.pipeline:
        return f"{shape.layers} layers do not split over {layout.pipeline} stages"
    if layout.pipeline > 1 and layout.zero_stage > 1:
        return "DeepSpeed's pipeline engine takes ZeRO 0 or 1"
    if args.global_batch % (layout.data * layout.micro_batch):
        return f"global batch {args.global_batch} is not a multiple of {layout.data} x micro batch {layout.micro_batch}"
    return None


def _link(args, ranks_apart, group):
    """GB/s of a group of `group` ranks whose members are `ranks_apart` apart."""
    return args.intra_node_bandwidth if ranks_apart * group <= args.gpus_per_node else args.inter_node_bandwidth


def step_seconds(args, shape, layout, psi):
    tokens = args.global_batch * shape.seq_length
    flops_per_token = (8 if layout.checkpoint_activations else 6) * psi + 12 * shape.layers * shape.hidden * shape.seq_length
    micro_batches = args.global_batch // (layout.data * layout.micro_batch)
    compute = tokens * flops_per_token / (args.gpus * args.gpu_tflops * 1e12 * args.efficiency)
    compute *= 1 + (layout.pipeline - 1) / micro_batches
    bytes_per_value = 4 if layout.precision == "fp32" else 2
    activation = shape.seq_length * layout.micro_batch * shape.hidden * bytes_per_value
    tensor = (4 * 2 * (layout.tensor - 1) / layout.tensor * activation * shape.layers / layout.pipeline * micro_batches
              / (_link(args, 1, layout.tensor) * 1e9)) if layout.tensor > 1 else 0.0
    gradient_bytes = psi / (layout.tensor * layout.pipeline) * bytes_per_value * (1.5 if layout.zero_stage == 3 else 1)
    data = (2 * (layout.data - 1) / layout.data * gradient_bytes / (_link(args, layout.tensor * layout.pipeline,
                                                                          layout.data) * 1e9)) if layout.data > 1 else 0.0
    pipe = (2 * activation * micro_batches / (_link(args, layout.tensor, layout.pipeline) * 1e9)) \
        if layout.pipeline > 1 else 0.0
    return compute + tensor + data + pipe


def command_line(args, layout):
    nodes = max(1, args.gpus // args.gpus_per_node)
    model = f"--model-size {args.model_size}" if args.model_size else (
        f"--num-layers {args.num_layers} --hidden-size {args.hidden_size} --num-attention-heads {args.num_attention_heads}")
    precision = {"fp32": "", "bf16": " --bf16", "bf16-weights": " --bf16-weights", "fp16": " --fp16"}[layout.precision]
    if "tokenizer_type" in args.explicit:
        model += f" --tokenizer-type {args.tokenizer_type}"
    return (f"deepspeed --num_gpus {min(args.gpus, args.gpus_per_node)}" + (f" --num_nodes {nodes}" if nodes > 1 else "")
            + f" pretrain_gpt2.py {model} --seq-length {args.seq_length} --global-batch-size {args.global_batch}"
            f" --batch-size {layout.micro_batch} --model-parallel-size {layout.tensor} --pipe-parallel-size"
            f" {layout.pipeline} --zero-stage {layout.zero_stage}"
            + (" --checkpoint-activations" if layout.checkpoint_activations else "") + precision)


def plan(args):
    shape, psi = shape_from_args(args), parameters(shape_from_args(args))
    limit = parse_bytes(args.device_memory or args.gpu_memory)
    device = "cpu" if args.device_memory else "gpu"
    rows, left_out = [], []
    for layout, reason in candidates(args, shape):
        if reason is None:
            parts = predicted_peak(shape, layout, device)
            if parts["total"] > limit:
                reason = f"predicted {parts['total'] / GIB:.1f} GiB over {limit / GIB:.1f} GiB"
            else:
                seconds = step_seconds(args, shape, layout, psi)
                rows.append({"layout": asdict(layout), "memory": parts, "step_seconds": seconds,
                             "tokens_per_second": args.global_batch * shape.seq_length / seconds,
                             "command": command_line(args, layout)})
        if reason is not None:
            left_out.append({"layout": asdict(layout), "why": reason})
    rows.sort(key=lambda row: (-row["tokens_per_second"], row["memory"]["total"]))  # equals: the least memory
    return {"parameters": psi, "gpus": args.gpus, "device_memory": limit, "layouts": rows, "left_out": left_out}


def print_table(args, result):
    print(f"{result['parameters'] / 1e9:.2f}B parameters, sequence {args.seq_length}, global batch {args.global_batch}, "
          f"{args.gpus} devices ({args.gpus_per_node} a node) of {result['device_memory'] / GIB:.0f} GiB; roofline "
          f"{args.gpu_tflops:.0f} TFLOP/s x {args.efficiency}, links {args.intra_node_bandwidth:.0f} GB/s in a node, "
          f"{args.inter_node_bandwidth:.0f} GB/s across")
    print(f"{'TP':>3} {'PP':>3} {'DP':>4} {'ZeRO':>4} {'micro':>5} {'ckpt':>4} | {'params':>7} {'grads':>7} {'optim':>7} "
          f"{'activ':>7} {'output':>7} {'gather':>7} {'buffers':>7} {'frag':>7} {'total':>7} GiB {'peak at':>9} | {'step s':>7} "
          f"{'tokens/s':>10}")
    for row in result["layouts"][:args.top]:
        layout, memory = row["layout"], row["memory"]
        print(f"{layout['tensor']:>3} {layout['pipeline']:>3} {layout['data']:>4} {layout['zero_stage']:>4} "
              f"{layout['micro_batch']:>5} {'yes' if layout['checkpoint_activations'] else 'no':>4} | "
              + " ".join(f"{memory.get(part, 0) / GIB:7.2f}" for part in (
                  "parameters", "gradients", "optimizer", "activations", "output layer", "gathered parameters", "buffers",
                  "fragmentation", "total"))
              + f"     {memory['at']:>9} | {row['step_seconds']:7.2f} "
              f"{row['tokens_per_second']:10,.0f}")
    if not result["layouts"]:
        print("no layout fits: more devices, more memory, or a smaller model")
    else:
        print(f"{len(result['layouts'])} layouts fit; the fastest:\n  {result['layouts'][0]['command']}")
    if args.why:
        for row in result["left_out"]:
            layout = row["layout"]
            print(f"left out: TP {layout['tensor']} PP {layout['pipeline']} DP {layout['data']} ZeRO {layout['zero_stage']} "
                  f"micro {layout['micro_batch']} ckpt {layout['checkpoint_activations']}: {row['why']}")


def main(argv=None):
    args = get_args(argv, description=__doc__, extra_args=add_plan_args)
    if args.gpus < 1 or args.gpus % min(args.gpus, args.gpus_per_node):
        sys.exit(f"error: --gpus {args.gpus} is not a whole number of nodes of --gpus-per-node {args.gpus_per_node}")
    args.global_batch = args.global_batch_size or args.batch_size * args.gpus
    result = plan(args)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print_table(args, result)
    return result


if __name__ == "__main__":
    main()
