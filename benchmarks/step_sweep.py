"""The sweep behind scripts/benchmark_gpu.sh: pretrain_gpt2.py's whole training step on one GPU, per model
size, sequence length and activation checkpointing, the micro-batch doubled until memory runs out; all
runs in this one process (a fresh engine each, memory released in between), so a run costs its model's
build and its iterations, not an interpreter's start.

Each row: tokens/s, TFLOP/s per GPU (model FLOPs: 6 x parameters + attention, recomputation not
counted), MFU against the card's dense bf16 peak (looked up from its name, printed; PEAK_TFLOPS
overrides) and the allocator's peak memory, from the last log window (--log-interval ITERS / 2, after
the first window's warm-up). Then the best row of each size again with --timing-breakdown (the share
of the step in forward+loss, backward, optimizer and the rest), and at gpt2-350m's best row one thing
changed at a time: bf16 weights (DeepSpeed's bf16 optimizer), fp16, --compile (with dropout, and without:
attention dropout forks mpu's RNG tracker, whose get/set_rng_state Dynamo does not trace, so a layer
compiles as 4 graphs with attention run eagerly between them; without dropout it is one graph), ZeRO-0;
and all-local attention (window 256) against global at sequence 2048.

    python benchmarks/step_sweep.py [--sizes gpt2-350m gpt2-1.3b] [--seqs 1024 2048] [--micro 8 16 32 64]
        [--iters 10] [--zero-stage 1] [--dry-run]

--dry-run (any machine, a CPU too) parses every run's flags and prints them instead of running.
"""

import argparse
import contextlib
import gc
import io
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# dense bf16 peak TFLOP/s by a word of the card's name (H100: SXM; its PCIe form is 756)
PEAK_TFLOPS = {"H200": 989, "H100 PCIe": 756, "H100": 989, "A100": 312, "L40S": 362, "A10G": 125, "4090": 165}
LOGGED = {"tokens": r"tokens per second: ([0-9.]+)", "tflops": r"TFLOP/s per device: ([0-9.]+)",
          "memory": r"peak memory \(GiB\): ([0-9.]+)"}


def card_peak():
    import torch
    name = torch.cuda.get_device_name()
    peak = os.environ.get("PEAK_TFLOPS") or next((value for key, value in PEAK_TFLOPS.items() if key in name), 0)
    return name, float(peak)


def argv_of(size, seq, micro, checkpointing, iters, zero_stage, extra=()):
    return ["--model-size", size, "--seq-length", str(seq), "--max-position-embeddings", str(seq),
            "--batch-size", str(micro), "--bf16", "--zero-stage", str(zero_stage),
            *(["--checkpoint-activations"] if checkpointing else []), "--train-iters", str(iters),
            "--log-interval", str(iters // 2), "--eval-iters", "0", "--lr", "1e-4", "--hidden-dropout", "0.1",
            "--attention-dropout", "0.1", *extra]


def run(argv):
    """The last log line's figures ({name: value}, shares too where logged), or "out of memory"."""
    import torch

    import mpu
    import pretrain_gpt2
    from step_timing import shares_logged
    mpu.destroy_model_parallel()
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            pretrain_gpt2.main(argv)
    except torch.cuda.OutOfMemoryError:
        return "out of memory"
    finally:
        gc.collect()
        torch.cuda.empty_cache()
    line = [text for text in printed.getvalue().splitlines() if "tokens per second" in text][-1]
    figures = {name: float(re.search(pattern, line).group(1)) for name, pattern in LOGGED.items()}
    figures.update(shares_logged(line))
    return figures


def _row(name, figures, peak):
    if isinstance(figures, str):
        return f"{name:44s} {figures}"
    mfu = f"{100 * figures['tflops'] / peak:5.1f}%" if peak else "  n/a"
    shares = "  " + ", ".join(f"{part} {figures[part]:.1f}%" for part in ("forward+loss", "backward", "optimizer",
                                                                          "rest") if part in figures)
    return (f"{name:44s} {figures['tokens']:10.0f} {figures['tflops']:8.1f} {mfu:>6} {figures['memory']:8.1f}"
            + (shares if "rest" in figures else ""))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["gpt2-350m", "gpt2-1.3b"])
    parser.add_argument("--seqs", nargs="+", type=int, default=[1024, 2048])
    parser.add_argument("--micro", nargs="+", type=int, default=[8, 16, 32, 64])
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--zero-stage", type=int, default=1)
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args()
    if args.dry_run:
        from arguments import get_args

        def measure(name, argv):
            get_args(argv)
            print(f"{name:44s} flags ok: pretrain_gpt2.py {' '.join(argv)}")
            return {"tflops": 0.0}
        peak = 0.0
        print("dry run: every run's flags, parsed")
    else:
        card, peak = card_peak()
        print(f"GPU: {card} | dense bf16 peak for MFU: {peak:.0f} TFLOP/s | --bf16 (fp32 weights, bf16 autocast), "
              f"ZeRO-{args.zero_stage}, dropout 0.1, {args.iters} iterations a run, the last {args.iters // 2} reported")
        print(f"{'run':44s} {'tokens/s':>10} {'TFLOP/s':>8} {'MFU':>6} {'peak GiB':>8}")

        def measure(name, argv):
            figures = run(argv)
            print(_row(name, figures, peak), flush=True)
            return figures
    best = {}
    for size in args.sizes:
        for seq in args.seqs:
            for checkpointing in (False, True):
                for micro in args.micro:
                    name = f"{size} seq {seq} micro {micro}{' ckpt' if checkpointing else ''}"
                    argv = argv_of(size, seq, micro, checkpointing, args.iters, args.zero_stage)
                    figures = measure(name, argv)
                    if isinstance(figures, str):
                        break  # larger micro-batches need more memory still
                    if figures["tflops"] >= best.get(size, ("", [], -1.0))[2]:
                        best[size] = (name, argv, figures["tflops"])
    print("the best row of each size, with --timing-breakdown (the device synchronised around each part):")
    for name, argv, _ in best.values():
        measure(f"{name}, parts", argv + ["--timing-breakdown"])
    if "gpt2-350m" in best:
        name, argv, _ = best["gpt2-350m"]
        print(f"{name}, one thing changed:")
        for change, flags in (("bf16 weights (DeepSpeed's bf16 optimizer)", ["--bf16-weights"]),
                              ("fp16, dynamic loss scale", ["--fp16"]), ("--compile", ["--compile"]),
                              ("--compile, dropout 0 (one graph a layer)", ["--compile", "--hidden-dropout", "0",
                                                                            "--attention-dropout", "0"]),
                              ("ZeRO-0", ["--zero-stage", "0"])):
            changed = [flag for flag in argv if flag != "--bf16"] if change.startswith(("bf16", "fp16")) else argv
            measure(f"  {change}", changed + flags)
    print("gpt2-350m at sequence 2048, micro 8, dropout 0 (FlexAttention needs none): global against all-local "
          "attention (window 256)")
    attention = {}
    for kind, flags in (("global", []), ("local", ["--attention-types", "local", "--attention-window", "256"])):
        argv = argv_of("gpt2-350m", 2048, 8, False, args.iters, args.zero_stage,
                       ["--hidden-dropout", "0", "--attention-dropout", "0", *flags])
        attention[kind] = measure(f"  {kind} attention", argv)
    if not args.dry_run and not any(isinstance(value, str) for value in attention.values()):
        print(f"  all-local / global TFLOP/s: {attention['local']['tflops'] / attention['global']['tflops']:.2f}")


if __name__ == "__main__":
    main()
