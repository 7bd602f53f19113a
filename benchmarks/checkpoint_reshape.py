"""Time and bytes of a checkpoint changing layout, for GPT-2 124M on this machine.

    python benchmarks/checkpoint_reshape.py [--model-size gpt2-124m] [--ranks 2] [--saving "--model-parallel-size 2"]
        [--resuming-ranks 1] [--resuming ""] [--folder DIR] [--keep]

1. save: one iteration at the saving layout (torchrun, --ranks processes), then its save (the run's
   own log line: seconds; bytes of the tag folder);
2. native load: the same layout resumes from it (DeepSpeed's own loading), as the baseline;
3. convert: scripts/convert_checkpoint.py --load --save writes the layout-free form (timed here; bytes);
4. load at the new layout: --resuming-ranks processes with --resuming flags resume from the converted
   folder (the run's own log line).
One line per phase. The checkpoints hold fp32 weights and AdamW's two moments (16 bytes a parameter
with the master copy, 12 without).
"""

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def _bytes(folder):
    return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(folder) for name in names)


def _launch(ranks, flags, log_pattern):
    """Run pretrain_gpt2.py on `ranks` CPU processes; the seconds its log line matching log_pattern says."""
    from launch_environment import free_port
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks), "--master_port",
               str(free_port()), os.path.join(REPO, "pretrain_gpt2.py"), *flags]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    found = re.search(log_pattern, done.stdout)
    if done.returncode or not found:
        sys.exit(f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return float(found.group(1))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-size", default="gpt2-124m")
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--saving", default="--model-parallel-size 2", help="the saving run's layout flags")
    parser.add_argument("--resuming-ranks", type=int, default=1)
    parser.add_argument("--resuming", default="", help="the resuming run's layout flags")
    parser.add_argument("--folder", default=None, help="where to write the checkpoints (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the checkpoints")
    args = parser.parse_args()
    folder = args.folder or tempfile.mkdtemp(prefix="checkpoint_reshape_")
    saved, converted = os.path.join(folder, "saved"), os.path.join(folder, "converted")
    common = ["--model-size", args.model_size, "--seq-length", "128", "--batch-size", "1", "--eval-iters", "0",
              "--log-interval", "1", "--lr", "1e-4"]
    print(f"{args.model_size}: saved at {args.ranks} ranks '{args.saving}', resumed at {args.resuming_ranks} "
          f"'{args.resuming}', CPU ({os.cpu_count()} cores), fp32 AdamW", flush=True)
    try:
        seconds = _launch(args.ranks, [*common, "--train-iters", "1", "--save", saved, *shlex.split(args.saving)],
                          r"saved checkpoint at iteration 1 to .* \(([\d.]+) s\)")
        tag = os.path.join(saved, "global_step1")
        print(f"save                      {seconds:7.1f} s  {_bytes(tag) / 2**20:9.1f} MiB", flush=True)
        seconds = _launch(args.ranks, [*common, "--train-iters", "2", "--load", saved, *shlex.split(args.saving)],
                          r"loaded checkpoint .* \(([\d.]+) s\)")
        print(f"load, same layout         {seconds:7.1f} s", flush=True)
        started = time.time()
        subprocess.run([sys.executable, os.path.join(REPO, "scripts", "convert_checkpoint.py"), "--load", saved,
                        "--save", converted], check=True, capture_output=True, text=True)
        seconds = time.time() - started
        print(f"convert (whole script)    {seconds:7.1f} s  {_bytes(converted) / 2**20:9.1f} MiB layout-free", flush=True)
        seconds = _launch(args.resuming_ranks, [*common, "--train-iters", "2", "--load", converted,
                                                *shlex.split(args.resuming)],
                          r"loaded checkpoint .* \(layout-free, .*; ([\d.]+) s\)")
        print(f"load, new layout          {seconds:7.1f} s", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
