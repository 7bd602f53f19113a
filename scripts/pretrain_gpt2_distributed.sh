#!/usr/bin/env bash
# Data-parallel GPT-2 pretraining on one node with torchrun: NPROC processes (GPUs, or CPU ranks over
# gloo). Sizes from the environment (scripts/gpt2_defaults.sh); extra flags go to pretrain_gpt2.py.
set -euo pipefail
cd "$(dirname "$0")/.."
BATCH_SIZE=${BATCH_SIZE:-4}
CHECKPOINT_DIR=${CHECKPOINT_DIR:-checkpoints/gpt2_distributed}
source scripts/gpt2_defaults.sh

torchrun --standalone --nproc_per_node "${NPROC:-2}" pretrain_gpt2.py "${GPT2_ARGS[@]}" "$@"
