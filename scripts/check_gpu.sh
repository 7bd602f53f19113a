#!/usr/bin/env bash
# The GPU paths against fp32 in a few minutes (bf16, bf16 weights, fp16 with the fused output loss; FlexAttention;
# BERT's gathered head; TP=2 on two GPUs): see scripts/check_gpu.py. `--dry-run` checks the flags on any machine.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 scripts/check_gpu.py "$@"
