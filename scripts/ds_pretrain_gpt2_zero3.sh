#!/usr/bin/env bash
# GPT-2 with ZeRO-3 (model built under deepspeed.zero.Init); DS_CONFIG=ds_configs/ds_zero3_offload.json
# also offloads parameters and optimizer states to CPU memory.
ENTRY=pretrain_gpt2.py BATCH_SIZE=${BATCH_SIZE:-4} DS_CONFIG=${DS_CONFIG:-ds_configs/ds_zero3.json} \
    DEFAULT_CHECKPOINT_DIR=checkpoints/gpt2_zero3 exec bash "$(dirname "$0")/run_deepspeed.sh" "$@"
