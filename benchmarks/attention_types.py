"""Time and memory of one attention layer's forward and backward per attention type (global, local,
linear) at several sequence lengths, on this machine.

    python benchmarks/attention_types.py [--seq 512 2048] [--hidden-size 768] [--heads 12] [--window 256]
        [--batch-size 1] [--repeats 5] [--threads N]

Each (type, length) runs in a fresh process, so its peak memory is its own: memory is the growth of
the process's peak resident set over the layer's forward and backward (weights and inputs excluded);
time is the median of --repeats forward+backward passes after one warm-up. One line per run.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(attention_type, seq, hidden, heads, window, batch, repeats):
    import torch

    import mpu
    from initialize import initialize_distributed
    from model.architecture import Architecture
    from model.transformer import ParallelSelfAttention, init_normal
    initialize_distributed(argparse.Namespace(local_rank=None, distributed_backend=None, model_parallel_size=1,
                                              pipe_parallel_size=1))
    layer = ParallelSelfAttention(hidden, heads, 0.0, 0.0, init_normal(0.02), init_normal(0.02), True,
                                  Architecture(attention_window=window), attention_type)
    x = torch.randn(batch, seq, hidden, requires_grad=True)
    before = _peak_mib()
    layer(x).sum().backward()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        layer(x).sum().backward()
        times.append(time.perf_counter() - started)
    mpu.destroy_model_parallel()
    return {"ms": statistics.median(times) * 1000, "peak_growth_mib": _peak_mib() - before, "peak_mib": _peak_mib()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seq", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--hidden-size", type=int, default=768)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)  # internal: run one (type, seq) here
    args = parser.parse_args(argv)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    if args.one:
        print(json.dumps(measure(args.one[0], int(args.one[1]), args.hidden_size, args.heads, args.window,
                                 args.batch_size, args.repeats)))
        return
    print(f"one attention layer, hidden {args.hidden_size}, {args.heads} heads, batch {args.batch_size}, local window "
          f"{args.window}, fp32, forward + backward")
    shared = [f"--{name}={value}" for name, value in (("hidden-size", args.hidden_size), ("heads", args.heads),
                                                       ("window", args.window), ("batch-size", args.batch_size),
                                                       ("repeats", args.repeats))]
    shared += [f"--threads={args.threads}"] if args.threads else []
    for seq in args.seq:
        results = {}
        for kind in ("global", "local", "linear"):
            out = subprocess.run([sys.executable, os.path.abspath(__file__), "--one", kind, str(seq), *shared],
                                 capture_output=True, text=True, check=True).stdout
            results[kind] = json.loads(out.strip().splitlines()[-1])
            print(f"seq {seq:5d} | {kind:6s} | {results[kind]['ms']:9.1f} ms | peak memory growth "
                  f"{results[kind]['peak_growth_mib']:8.1f} MiB | x{results['global']['ms'] / results[kind]['ms']:.2f} "
                  "speed of global", flush=True)


if __name__ == "__main__":
    main()
