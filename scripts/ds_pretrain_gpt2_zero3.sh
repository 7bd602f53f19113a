#!/usr/bin/env bash
# GPT-2 with ZeRO-3 (parameters, gradients and optimizer states partitioned; the model is built under
# deepspeed.zero.Init). DS_CONFIG=ds_configs/ds_zero3_offload.json also offloads to CPU memory.
set -euo pipefail
cd "$(dirname "$0")/.."
DS_CONFIG=${DS_CONFIG:-ds_configs/ds_zero3.json} CHECKPOINT_DIR=${CHECKPOINT_DIR:-checkpoints/gpt2_zero3} \
    exec bash scripts/ds_pretrain_gpt2.sh "$@"
