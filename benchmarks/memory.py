"""Per-rank memory of the model states at ZeRO 0-3 on 2 CPU ranks, beside ZeRO's formulas and
DeepSpeed's own estimators, and the activations a layer keeps for backward with and without
activation checkpointing.

    python benchmarks/memory.py [--model-size gpt2-124m] [--ranks 2] [--stages 0 1 2 3]
        [--precision bf16-weights|bf16|fp32]
        [--seq-length 1024] [--batch-size 1]

Model states: pretrain_gpt2.py runs two iterations per stage; just before the second optimizer step
(gradients of this iteration and optimizer states of the first in place) every tensor reachable from
the engine is counted once per storage, as parameters (the module's weights or ZeRO-3's partitions),
gradients, optimizer (fp32 master copies and moments) or buffers (communication buckets and the
like), beside memory_model.py's model states (ZeRO's 2 + 2 + 12 bytes a parameter for --bf16-weights,
DeepSpeed's fp32 layout for fp32 weights; its docstring has the formulas). DeepSpeed's estimators (estimate_zero2/3_model_states_mem_needs, no offload) are printed beside
(they count mixed precision). Activations: the bytes of
the tensors one transformer layer saves for backward (saved-tensor hooks, one count per storage) for
one micro-batch, as a full layer and under activation checkpointing; and what the output layer with
its loss keeps, unfused and fused (mpu.vocab_parallel_output_cross_entropy).
"""

import argparse
import contextlib
import io
import os
import sys

import torch
import torch.multiprocessing as mp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from launch_environment import free_port  # noqa: E402

MIB = 2 ** 20


def _tensors(value, depth=0):
    """Tensors in an attribute value: a tensor, or lists, tuples and dicts of them (a few levels deep)."""
    if torch.is_tensor(value):
        yield value
    elif depth < 4 and isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item, depth + 1)
    elif depth < 4 and isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item, depth + 1)


def model_state_bytes(engine):
    """{category: bytes} of this rank, each storage counted once, in the first category that reaches it."""
    seen, counted = set(), {"parameters": 0, "gradients": 0, "optimizer": 0, "buffers": 0}

    def count(category, tensors):
        for tensor in tensors:
            if tensor is None or tensor.numel() == 0:
                continue
            storage = tensor.untyped_storage()
            if storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                counted[category] += storage.nbytes()
    optimizer = engine.optimizer
    base = getattr(optimizer, "optimizer", optimizer)
    params = list(engine.module.parameters())
    count("parameters", [getattr(p, "ds_tensor", p.data) for p in params])
    attributes = vars(optimizer) if optimizer is not base else {}
    masters = [t for name, value in attributes.items() if "fp32" in name and "grad" not in name for t in _tensors(value)]
    count("gradients", [p.grad for p in params] + [t.grad for t in masters] + [
        t for name, value in attributes.items() if "grad" in name for t in _tensors(value)])
    count("optimizer", masters + [t for state in base.state.values() for t in _tensors(state)] + [
        t for group in base.param_groups for p in group["params"] for t in (p, p.grad)])
    count("buffers", [t for value in attributes.values() for t in _tensors(value)])
    return counted


def _measure_stage(argv):
    """pretrain_gpt2.main for two iterations; this rank's model-state bytes before the second step."""
    import mpu
    import pretrain_gpt2
    import training
    measured, train_step = {}, training._train_step

    def measuring_step(steps, iterator, engine, args, parts=None):
        if engine.global_steps == 1 and not measured:
            step = engine.step

            def step_then_restore(*a, **k):
                measured.update(model_state_bytes(engine))
                engine.step = step
                return step(*a, **k)
            engine.step = step_then_restore
        return train_step(steps, iterator, engine, args, parts)
    training._train_step = measuring_step
    mpu.destroy_model_parallel()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            pretrain_gpt2.main(argv)
    finally:
        training._train_step = train_step
    return measured


def _rank(rank, world_size, port, argvs, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_WORLD_SIZE=str(world_size))
    torch.set_num_threads(1)
    import deepspeed
    deepspeed.init_distributed(dist_backend="gloo", verbose=False)
    for stage, argv in argvs:
        measured = _measure_stage(argv)
        if rank == 0:
            results.put((stage, measured))


def _saved_bytes(compute, owned):
    """(bytes of the tensors autograd keeps for the backward of compute(), less those sharing storage
    with the tensors in `owned` (inputs, parameters), compute()'s result)."""
    stored = {}

    def pack(tensor):
        stored[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        result = compute()
    owned = {tensor.untyped_storage().data_ptr() for tensor in owned}
    return sum(size for pointer, size in stored.items() if pointer not in owned), result


def _initialize_one_process():
    from initialize import initialize_distributed, set_random_seed
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(free_port()))
    initialize_distributed(argparse.Namespace(local_rank=None, distributed_backend=None, model_parallel_size=1,
                                              pipe_parallel_size=1))
    set_random_seed(1234)


def _numerics(args):
    """(the weights' and the layer input's dtype, the context the model runs in) of args.precision."""
    if args.precision == "bf16":  # fp32 weights under autocast
        return torch.float32, torch.autocast("cpu", dtype=torch.bfloat16)
    return (torch.bfloat16 if args.precision == "bf16-weights" else torch.float32), contextlib.nullcontext()


def activation_bytes(args):
    """(bytes a layer saves for backward, the same under activation checkpointing) for one micro-batch."""
    import mpu
    from arguments import MODEL_SIZES
    from model.architecture import Architecture
    from model.transformer import ParallelTransformerLayer, init_normal
    _, hidden, heads = MODEL_SIZES[args.model_size]
    layer = ParallelTransformerLayer(hidden, heads, 4 * hidden, 0.1, 0.1, init_normal(0.02), init_normal(0.02),
                                     1e-5, causal=True, pre_layernorm=True, architecture=Architecture())
    dtype, numerics = _numerics(args)
    layer = layer.to(dtype)
    x = torch.randn(args.batch_size, args.seq_length, hidden, dtype=dtype, requires_grad=True)
    sizes = []
    for checkpointed in (False, True):
        with numerics:
            size, y = _saved_bytes(lambda on=checkpointed: mpu.checkpoint(layer, x) if on else layer(x),
                                   [x, *layer.parameters()])
        sizes.append(size)
        y.float().sum().backward()
    return sizes


def output_layer_bytes(args):
    """(bytes the output layer and its loss keep for backward unfused: F.linear then
    mpu.vocab_parallel_cross_entropy, the same fused: mpu.vocab_parallel_output_cross_entropy)."""
    import mpu
    from arguments import MODEL_SIZES
    _, hidden, _ = MODEL_SIZES[args.model_size]
    dtype, numerics = _numerics(args)
    x = torch.randn(args.batch_size, args.seq_length, hidden, dtype=dtype, requires_grad=True)
    weight = torch.nn.Parameter(torch.randn(50304, hidden, dtype=dtype) * 0.02)
    target = torch.randint(0, 50257, (args.batch_size, args.seq_length))
    loss_weights = torch.full(target.shape, 1.0 / target.numel())

    def unfused():
        losses = mpu.vocab_parallel_cross_entropy(torch.nn.functional.linear(x, weight).float(), target, 50257)
        return (losses * loss_weights).sum()
    sizes = []
    for compute in (unfused, lambda: mpu.vocab_parallel_output_cross_entropy(x, weight, target, loss_weights, 50257)[0]):
        with numerics:
            size, loss = _saved_bytes(compute, [x, weight])
        sizes.append(size)
        loss.backward()
    return sizes


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-size", default="gpt2-124m")
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--stages", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--precision", choices=("bf16-weights", "bf16", "fp32"), default="bf16-weights",
                        help="bf16-weights: DeepSpeed's bf16 optimizer (the ZeRO paper's mixed precision); bf16: "
                             "fp32 weights under autocast (--bf16)")
    parser.add_argument("--seq-length", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=1)
    args = parser.parse_args()
    from arguments import MODEL_SIZES
    layers, hidden, heads = MODEL_SIZES[args.model_size]
    common = ["--model-size", args.model_size, "--seq-length", "64", "--batch-size", "1", "--train-iters", "2",
              "--eval-iters", "0", "--log-interval", "1", *({"fp32": []}.get(args.precision, [f"--{args.precision}"]))]
    argvs = [(stage, [*common, "--zero-stage", str(stage)]) for stage in args.stages]
    context = mp.get_context("spawn")
    results = context.Queue()
    port = free_port()
    ranks = [context.Process(target=_rank, args=(r, args.ranks, port, argvs, results)) for r in range(args.ranks)]
    for process in ranks:
        process.start()
    measured = dict(results.get(timeout=1800) for _ in argvs)
    for process in ranks:
        process.join()
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    from memory_model import Layout, Shape, model_states, parameters
    shape = Shape(layers, hidden, heads, 4 * hidden, 50304, 64, 1024)
    psi, nd = parameters(shape), args.ranks
    print(f"{args.model_size}: {psi / 1e6:.1f}M parameters (Psi), {nd} CPU ranks, {args.precision}; MiB per rank")
    print(f"{'ZeRO':5s} {'parameters':>10s} {'gradients':>10s} {'optimizer':>10s} {'states':>10s} {'formula':>10s} "
          f"{'ratio':>6s} {'DeepSpeed':>10s} {'buffers':>10s}")
    for stage in args.stages:
        got = measured[stage]
        states = got["parameters"] + got["gradients"] + got["optimizer"]
        formula = sum(model_states(shape, Layout(1, 1, nd, stage, 1, False, args.precision)).values())
        estimate = (estimate_zero3_model_states_mem_needs(psi, 12 * hidden * hidden, nd, 1, False, False)[1]
                    if stage == 3 else estimate_zero2_model_states_mem_needs(psi, nd, 1, False)[1]
                    if stage == 2 else None)
        print(f"{stage:<5d} {got['parameters'] / MIB:10.1f} {got['gradients'] / MIB:10.1f} {got['optimizer'] / MIB:10.1f} "
              f"{states / MIB:10.1f} {formula / MIB:10.1f} {states / formula:6.3f} "
              f"{(f'{estimate / MIB:10.1f}' if estimate else '         -')} {got['buffers'] / MIB:10.1f}")
    _initialize_one_process()
    full, checkpointed = activation_bytes(args)
    print(f"activations one layer keeps for backward (micro batch {args.batch_size} x {args.seq_length}, hidden {hidden}, "
          f"{args.precision}): {full / MIB:.1f} MiB, with activation checkpointing {checkpointed / MIB:.1f} MiB "
          f"(its input only: {args.batch_size * args.seq_length * hidden * (2 if args.precision == 'bf16-weights' else 4) / MIB:.1f} "
          "MiB, kept by the layer before)")
    unfused, fused = output_layer_bytes(args)
    print(f"the output layer and loss keep for backward (vocabulary 50304): unfused {unfused / MIB:.1f} MiB (the "
          f"softmax, [tokens, vocabulary] fp32), fused {fused / MIB:.1f} MiB (the gradients, fp32: [tokens, hidden] "
          "and [vocabulary, hidden], whatever the tokens)")


if __name__ == "__main__":
    main()
