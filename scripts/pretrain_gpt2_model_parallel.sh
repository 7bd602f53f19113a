#!/usr/bin/env bash
# GPT-2 with tensor model parallelism under torchrun: MP_SIZE ranks share each layer, NPROC / MP_SIZE
# data-parallel replicas. Sizes from the environment (scripts/gpt2_defaults.sh); extra flags go to
# pretrain_gpt2.py.
set -euo pipefail
cd "$(dirname "$0")/.."
MP_SIZE=${MP_SIZE:-2}
CHECKPOINT_DIR=${CHECKPOINT_DIR:-checkpoints/gpt2_mp${MP_SIZE}}
source scripts/gpt2_defaults.sh

torchrun --standalone --nproc_per_node "${NPROC:-2}" pretrain_gpt2.py --model-parallel-size "$MP_SIZE" \
    "${GPT2_ARGS[@]}" "$@"
