"""The GPU paths in a few minutes, each training run against the same run in fp32 (one GPU; the
tensor-parallel pair where the machine has two):

- pretrain_gpt2.py (the fused output layer and loss) in --bf16 (fp32 weights under autocast),
  --bf16-weights (DeepSpeed's bf16 optimizer) and --fp16 (dynamic loss scale);
- an all-local GPT-Neo-style model (FlexAttention's sliding-window kernel) in fp32 and --bf16;
- pretrain_bert.py (the masked-LM head on the masked positions, fused with its bias) in --bf16;
- with 2 GPUs, GPT-2 at tensor parallel 2 in --bf16, against one GPU in fp32;
- FlexAttention's kernel against the blocked local attention, forward and backward, in bf16;
- memory_model.py's predicted peak against torch.cuda.max_memory_allocated (pretrain_gpt2.py prints both)
  at gpt2-350m and gpt2-1.3b, sequence 1024, three layouts each, within 15%.

Every run is gpt2-124m's shape at sequence 1024 (BERT: bert-base at 512), micro batch 8, dropout off, on the
bundled corpus; each logs its first ITERS losses, which must agree with the fp32 run's within the
precision's tolerance (bf16 2%, fp16 1% relative). One line per check, "ok" or "FAILED" with the
losses; exits 1 if any failed.

    bash scripts/check_gpu.sh [--iters 10] [--dry-run]

--dry-run (any machine) parses every run's flags and prints the commands instead of running them.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

TOLERANCE = {"fp32": 1e-4, "bf16": 2e-2, "bf16-weights": 2e-2, "fp16": 1e-2}
PRECISION_FLAGS = {"fp32": [], "bf16": ["--bf16"], "bf16-weights": ["--bf16-weights"], "fp16": ["--fp16"]}
GPT = ["--model-size", "gpt2-124m", "--seq-length", "1024", "--max-position-embeddings", "1024"]
NEO_LOCAL = [*GPT, "--attention-types", "local", "--attention-window", "256"]
BERT = ["--model-size", "bert-base", "--seq-length", "512", "--max-position-embeddings", "512"]

# (model, precision, micro batch, extra flags): the predicted peak against the measured one, on one GPU
MEMORY_CHECKS = [(size, precision, micro, extra) for size, micro in (("gpt2-350m", 8), ("gpt2-1.3b", 4)) for
                 precision, micro, extra in (("bf16", micro, ["--zero-stage", "1"]),
                                             ("bf16", 2 * micro, ["--zero-stage", "1", "--checkpoint-activations"]),
                                             ("bf16-weights", micro, ["--zero-stage", "0"]))]
MEMORY_TOLERANCE = 0.15

# (name, entry script, model flags, precision, tensor-parallel size): each compared with its fp32 run
CHECKS = [
    ("gpt2 bf16 (autocast)", "pretrain_gpt2.py", GPT, "bf16", 1),
    ("gpt2 bf16 weights", "pretrain_gpt2.py", GPT, "bf16-weights", 1),
    ("gpt2 fp16, dynamic loss scale", "pretrain_gpt2.py", GPT, "fp16", 1),
    ("all-local attention bf16", "pretrain_gpt2.py", NEO_LOCAL, "bf16", 1),
    ("bert bf16, gathered head", "pretrain_bert.py", BERT, "bf16", 1),
    ("gpt2 bf16 TP=2", "pretrain_gpt2.py", GPT, "bf16", 2),
]


def _command(entry, model, precision, tensor_parallel, iters, cache):
    flags = [*model, *PRECISION_FLAGS[precision], "--batch-size", "8", "--train-iters", str(iters), "--log-interval", "1", "--eval-iters", "0",
             "--hidden-dropout", "0", "--attention-dropout", "0", "--lr", "1e-4", "--zero-stage", "1",
             "--model-parallel-size", str(tensor_parallel), "--data-cache-dir", cache, "--seed", "1234"]
    launcher = [sys.executable] if tensor_parallel == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={tensor_parallel}"]
    return [*launcher, os.path.join(REPO, entry), *flags], flags


def _losses(command, log):
    """The run's first losses (lm loss per logged iteration), or an error string."""
    with open(log, "w") as out:
        result = subprocess.run(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    text = open(log).read()
    if result.returncode:
        return f"exit {result.returncode}: see {log}"
    return [float(value) for value in re.findall(r"\| lm loss: ([0-9.E+-]+) \|", text)]


def _compare(name, losses, reference, tolerance):
    if isinstance(losses, str) or isinstance(reference, str):
        return f"FAILED {name}: {losses if isinstance(losses, str) else reference}"
    worst = max(abs(a - b) / abs(b) for a, b in zip(losses, reference)) if losses else float("inf")
    if len(losses) != len(reference) or worst > tolerance:
        return (f"FAILED {name}: largest relative difference {worst:.2e} > {tolerance:.0e}\n  losses {losses}\n"
                f"  fp32   {reference}")
    return f"ok     {name}: {len(losses)} losses within {worst:.2e} of fp32 (tolerance {tolerance:.0e})"


def _memory_command(size, precision, micro, extra, cache):
    flags = ["--model-size", size, "--seq-length", "1024", "--max-position-embeddings", "1024",
             *PRECISION_FLAGS[precision], "--batch-size", str(micro), *extra, "--train-iters", "3", "--log-interval",
             "1", "--eval-iters", "0", "--data-cache-dir", cache]
    return [sys.executable, os.path.join(REPO, "pretrain_gpt2.py"), *flags], flags


def _memory_check(command, log):
    """The start-up prediction against the measured peak that the run prints after its second step."""
    with open(log, "w") as out:
        result = subprocess.run(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    text = open(log).read()
    predicted = re.search(r"predicted peak memory per rank: ([\d,]+) MiB", text)
    measured = re.search(r"measured peak memory per rank: ([\d,]+) MiB", text)
    name = " ".join(command[2:])
    if result.returncode or not (predicted and measured):
        return f"FAILED memory {name}: exit {result.returncode}, see {log}"
    predicted, measured = (float(match[1].replace(",", "")) for match in (predicted, measured))
    error = predicted / measured - 1
    status = "ok    " if abs(error) <= MEMORY_TOLERANCE else "FAILED"
    return f"{status} memory {name}: predicted {predicted:,.0f} MiB, measured {measured:,.0f} MiB ({error:+.1%})"


def _flex_kernel_check():
    """FlexAttention's compiled kernel against the blocked computation, forward and backward, bf16."""
    import torch

    from model import sliding_window
    from model.transformer import blocked_local_attention
    generator = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(2, 12, 2048, 64, device="cuda", dtype=torch.bfloat16, generator=generator)
               .requires_grad_() for _ in range(3))
    flex = sliding_window.flex_local_attention(q, k, v, 256)
    flex_grads = torch.autograd.grad(flex.float().square().sum(), (q, k, v))
    blocked = blocked_local_attention(q, k, v, 256)
    blocked_grads = torch.autograd.grad(blocked.float().square().sum(), (q, k, v))
    worst = max(float((a.float() - b.float()).abs().max() / b.float().abs().max())
                for a, b in zip((flex, *flex_grads), (blocked, *blocked_grads)))
    status = "ok    " if worst < 2e-2 else "FAILED"
    return f"{status} FlexAttention kernel vs blocked, output and gradients: largest difference {worst:.2e} of the max"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args()
    import torch
    gpus = 0 if args.dry_run else torch.cuda.device_count()
    if not args.dry_run and gpus == 0:
        sys.exit("check_gpu: no GPU visible (--dry-run checks the runs' flags on any machine)")
    cache, logs = tempfile.mkdtemp(prefix="check-gpu-data-"), tempfile.mkdtemp(prefix="check-gpu-logs-")
    checks = [check for check in CHECKS if check[4] == 1 or args.dry_run or gpus >= check[4]]
    if not args.dry_run:
        print(f"{torch.cuda.get_device_name()} x {gpus}; torch {torch.__version__}; logs in {logs}", flush=True)
    references, failed = {}, False
    for name, entry, model, precision, tensor_parallel in checks:
        runs = [("fp32", 1), (precision, tensor_parallel)]
        losses = []
        for run_precision, size in runs:
            command, flags = _command(entry, model, run_precision, size, args.iters, cache)
            key = (entry, tuple(model), run_precision, size)
            if key in references:
                losses.append(references[key])
            elif args.dry_run:
                from arguments import get_args
                get_args(flags, bert=entry == "pretrain_bert.py")
                print(f"flags ok: {' '.join(command[1:] if size == 1 else command[3:])}")
                references[key] = None
            else:
                log = os.path.join(logs, re.sub(r"[^a-z0-9]+", "-", f"{entry} {model} {run_precision} {size}") + ".log")
                references[key] = _losses(command, log)
                losses.append(references[key])
        if not args.dry_run:
            line = _compare(name, losses[1], losses[0], TOLERANCE[precision])
            failed |= line.startswith("FAILED")
            print(line, flush=True)
    for size, precision, micro, extra in MEMORY_CHECKS:
        command, flags = _memory_command(size, precision, micro, extra, cache)
        if args.dry_run:
            from arguments import get_args
            get_args(flags)
            print(f"flags ok: {' '.join(command[1:])}")
            continue
        log = os.path.join(logs, re.sub(r"[^a-z0-9]+", "-", f"memory {size} {precision} {micro} {extra}") + ".log")
        line = _memory_check(command, log)
        failed |= line.startswith("FAILED")
        print(line, flush=True)
    if not args.dry_run:
        line = _flex_kernel_check()
        failed |= line.startswith("FAILED")
        print(line, flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
