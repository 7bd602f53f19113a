#!/usr/bin/env bash
# ENTRY on NPROC processes of this node with torchrun (GPUs, or CPU ranks over gloo); MP_SIZE of them
# share each layer (tensor parallelism), the rest is data parallelism. Sizes from the environment
# (scripts/defaults.sh); extra flags go to the entry script.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/defaults.sh
torchrun --standalone --nproc_per_node "${NPROC:-2}" "$ENTRY" "${TRAIN_ARGS[@]}" "$@"
