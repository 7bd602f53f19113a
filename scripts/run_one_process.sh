#!/usr/bin/env bash
# ENTRY (pretrain_gpt2.py or pretrain_bert.py) in one process: the CPU, or one GPU. Sizes from the
# environment (scripts/defaults.sh); extra flags go to the entry script.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/defaults.sh
run_or_print python "$ENTRY" "${TRAIN_ARGS[@]}" "$@"
