#!/usr/bin/env bash
# BERT with the deepspeed launcher and ZeRO-2 bf16 (DS_CONFIG=ds_configs/ds_bert_lamb.json: LAMB, GPU only).
ENTRY=pretrain_bert.py BATCH_SIZE=${BATCH_SIZE:-4} DEFAULT_CHECKPOINT_DIR=checkpoints/bert_ds \
    exec bash "$(dirname "$0")/run_deepspeed.sh" "$@"
