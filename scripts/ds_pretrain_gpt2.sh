#!/usr/bin/env bash
# GPT-2 with the deepspeed launcher and ZeRO-2 in bf16 (runs on CPU and on Ampere-or-newer GPUs):
# NUM_GPUS processes on this node (CPU ranks over gloo when there is no GPU). DS_CONFIG picks another
# ds_config (ds_configs/ds_zero2_fp16.json on older GPUs); MP_SIZE adds tensor parallelism.
# Sizes from the environment (scripts/gpt2_defaults.sh); extra flags go to pretrain_gpt2.py.
set -euo pipefail
cd "$(dirname "$0")/.."
BATCH_SIZE=${BATCH_SIZE:-4}
CHECKPOINT_DIR=${CHECKPOINT_DIR:-checkpoints/gpt2_ds}
source scripts/gpt2_defaults.sh

deepspeed --num_gpus "${NUM_GPUS:-2}" --master_port "${MASTER_PORT:-29500}" pretrain_gpt2.py \
    --model-parallel-size "${MP_SIZE:-1}" "${GPT2_ARGS[@]}" \
    --deepspeed --deepspeed_config "${DS_CONFIG:-ds_configs/ds_zero2_bf16.json}" "$@"
