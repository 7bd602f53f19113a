#!/usr/bin/env bash
# GPU throughput of pretrain_gpt2.py's whole training step on one GPU (benchmarks/step_sweep.py): gpt2-350m
# and gpt2-1.3b in --bf16 at sequence 1024 and 2048, with and without activation checkpointing, the micro-batch
# doubled from 8 until memory runs out; tokens/s, TFLOP/s per GPU, MFU against the card's dense bf16 peak
# (printed; PEAK_TFLOPS overrides), peak memory; the best row of each size with the step's parts; at 350m bf16
# weights, fp16, --compile and ZeRO-0 against it; all-local against global attention at 2048. Then the whole
# step against our model in a bare loop (benchmarks/train_throughput.py). Settings from the environment:
# SIZES, SEQS, MICRO, ITERS (per run, default 10), ZERO_STAGE (default 1), BARE=0 skips the bare-loop part.
# `--dry-run` (on any machine, a CPU too) only checks that every run's flags parse, and prints them.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck disable=SC2086
sweep=(python3 benchmarks/step_sweep.py --sizes ${SIZES:-gpt2-350m gpt2-1.3b} --seqs ${SEQS:-1024 2048}
       --micro ${MICRO:-8 16 32 64} --iters "${ITERS:-10}" --zero-stage "${ZERO_STAGE:-1}")
if [[ "${1:-}" == "--dry-run" ]]; then
    exec "${sweep[@]}" --dry-run
fi
"${sweep[@]}"
if [[ "${BARE:-1}" != 0 ]]; then
    python3 benchmarks/train_throughput.py --shape gpt2-350m --precision bf16 --rounds 2 --iters 10
fi
