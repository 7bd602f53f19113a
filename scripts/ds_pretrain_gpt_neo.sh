#!/usr/bin/env bash
# GPT-Neo's architecture with the deepspeed launcher: global and local (window ATTENTION_WINDOW, default
# 256) layers alternating, unscaled attention scores, no q/k/v biases, learned positions, GeLU; Adafactor
# at ZeRO-0 (ds_configs/ds_gpt_neo_adafactor.json). MODEL_SIZE=gpt-neo-125m (or -1.3b, -2.7b) for the real
# shapes; the CPU default is the small quick-start shape.
ENTRY=pretrain_gpt2.py BATCH_SIZE=${BATCH_SIZE:-4} LR=${LR:-5e-2} DS_CONFIG=${DS_CONFIG:-ds_configs/ds_gpt_neo_adafactor.json} \
    CHECKPOINT_DIR=${CHECKPOINT_DIR:-checkpoints/gpt_neo} exec bash "$(dirname "$0")/run_deepspeed.sh" \
    --attention-types "global local" --attention-window "${ATTENTION_WINDOW:-256}" --no-attention-scaling \
    --no-qkv-bias "$@"
