"""What K-FAC costs a step: pretrain_gpt2.py's training loop without and with --kfac, side by side in one
process, and the preconditioner's parts timed inside the K-FAC run.

    python benchmarks/kfac_cost.py [--shape cpu|quick-start|gpt2-124m|gpt2-350m] [--iters 100] [--rounds 2]
        [--factor-steps 5] [--inverse-steps 50] [--threads N]

Prints ms per iteration of the loop (the fastest of --rounds, each run alternating), K-FAC's share of the
step, and that share split into: factor updates (the data-parallel sum of the covariances and the running
average, per update and per iteration), eigendecompositions (per decomposition round and per
iteration), preconditioning with the KL clip (every iteration), and the rest of the difference: the
hooks' covariance products inside forward and backward on factor-update iterations. At the defaults
(factors every 5, decompositions every 50 iterations, as the llm-pytorch guide runs GPT-Neo) the
decompositions are amortised over 50 iterations; --iters should be a multiple of --inverse-steps.
"""

import argparse
import contextlib
import functools
import io
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SHAPES = {  # layers, hidden, heads, sequence, micro batch, tokenizer
    "cpu": (4, 256, 4, 128, 8, "CharacterLevelTokenizer"),
    "quick-start": (4, 128, 4, 128, 8, "GPT2BPETokenizer"),  # scripts/pretrain_gpt2.sh's model and vocabulary
    "gpt2-124m": (12, 768, 12, 1024, 8, "GPT2BPETokenizer"),
    "gpt2-350m": (24, 1024, 16, 1024, 8, "GPT2BPETokenizer"),
}


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _timed(owner, name, totals):
    """Wrap owner.name to add its seconds (the device synchronised around it) to totals[name]."""
    original = getattr(owner, name)

    @functools.wraps(original)
    def timed(*args, **kwargs):
        _sync()
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            _sync()
            totals[name] = totals.get(name, 0.0) + time.perf_counter() - started
            totals[name + " calls"] = totals.get(name + " calls", 0) + 1
    setattr(owner, name, timed)
    return original


def _run(argv, totals):
    """Seconds of pretrain_gpt2's loop (setup and the final save excluded); K-FAC's parts into totals."""
    import kfac
    import mpu
    import pretrain_gpt2
    import training
    targets = ((training, "_train_loop"), (kfac.KFAC, "_update_factors"), (kfac.KFAC, "_update_eigen"),
               (kfac.KFAC, "step"))
    originals = [_timed(owner, name, totals) for owner, name in targets]
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            pretrain_gpt2.main(argv)
    finally:
        for (owner, name), original in zip(targets, originals):
            setattr(owner, name, original)
        mpu.destroy_model_parallel()
    return totals["_train_loop"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=SHAPES, default="cpu")
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--factor-steps", type=int, default=5)
    parser.add_argument("--inverse-steps", type=int, default=50)
    parser.add_argument("--threads", type=int, default=None)
    options = parser.parse_args()
    if options.threads:
        torch.set_num_threads(options.threads)
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    from launch_environment import free_port
    os.environ.setdefault("MASTER_PORT", str(free_port()))
    layers, hidden, heads, seq, micro, tokenizer = SHAPES[options.shape]
    cache = tempfile.mkdtemp(prefix="kfac-bench-")
    base = ["--num-layers", str(layers), "--hidden-size", str(hidden), "--num-attention-heads", str(heads),
            "--seq-length", str(seq), "--batch-size", str(micro), "--train-iters", str(options.iters),
            "--log-interval", str(options.iters), "--eval-iters", "0", "--hidden-dropout", "0",
            "--attention-dropout", "0", "--data-cache-dir", cache, "--tokenizer-type", tokenizer,
            "--num-workers", "0"]
    with_kfac = base + ["--kfac", "--kfac-factor-update-steps", str(options.factor_steps),
                        "--kfac-inv-update-steps", str(options.inverse_steps)]
    best = {"plain": float("inf"), "kfac": float("inf")}
    parts = None
    for _ in range(options.rounds):
        best["plain"] = min(best["plain"], _run(base, {}))
        totals = {}
        seconds = _run(with_kfac, totals)
        if seconds < best["kfac"]:
            best["kfac"], parts = seconds, totals
    per = {name: 1000 * value / options.iters for name, value in best.items()}
    factors, eigens = parts.get("_update_factors", 0.0), parts.get("_update_eigen", 0.0)
    precondition = parts["step"] - factors - eigens
    hooks = best["kfac"] - best["plain"] - parts["step"]
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} threads"
    print(f"shape {options.shape} ({layers} layers, hidden {hidden}, sequence {seq}, micro batch {micro}); {device}; "
          f"{options.iters} iterations, fastest of {options.rounds} rounds")
    print(f"  without K-FAC: {per['plain']:.1f} ms per iteration")
    print(f"  with K-FAC (factors every {options.factor_steps}, decompositions every {options.inverse_steps}): "
          f"{per['kfac']:.1f} ms per iteration, K-FAC's share {1 - best['plain'] / best['kfac']:.1%}")
    for name, total, calls in (("factor updates (sum over ranks, running average)", factors,
                                parts.get("_update_factors calls", 0)),
                               ("eigendecompositions", eigens, parts.get("_update_eigen calls", 0)),
                               ("preconditioning and KL clip", precondition, parts.get("step calls", 0)),
                               ("covariance products in the hooks (the rest)", hooks, None)):
        each = f"{1000 * total / calls:.1f} ms each of {calls}, " if calls else ""
        print(f"    {name}: {each}{1000 * total / options.iters:.1f} ms per iteration, "
              f"{total / best['kfac']:.1%} of the step")


if __name__ == "__main__":
    main()
