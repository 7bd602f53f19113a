#!/usr/bin/env bash
# GPT-2 with the deepspeed launcher and ZeRO-2 bf16 (DS_CONFIG picks another ds_config).
ENTRY=pretrain_gpt2.py BATCH_SIZE=${BATCH_SIZE:-4} DEFAULT_CHECKPOINT_DIR=checkpoints/gpt2_ds \
    exec bash "$(dirname "$0")/run_deepspeed.sh" "$@"
