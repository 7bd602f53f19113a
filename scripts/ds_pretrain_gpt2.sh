#!/usr/bin/env bash
# GPT-2 with the deepspeed launcher and ZeRO-2 (bf16: runs on CPU and on Ampere-or-newer GPUs).
# NUM_GPUS processes on this node (CPU ranks over gloo when there is no GPU); DS_CONFIG picks another
# ds_config (ds_configs/ds_zero2_fp16.json on older GPUs). Extra flags go to pretrain_gpt2.py.
set -euo pipefail
cd "$(dirname "$0")/.."

NUM_GPUS=${NUM_GPUS:-2}
MP_SIZE=${MP_SIZE:-1}
NUM_LAYERS=${NUM_LAYERS:-4}
HIDDEN_SIZE=${HIDDEN_SIZE:-128}
NUM_HEADS=${NUM_HEADS:-4}
SEQ_LENGTH=${SEQ_LENGTH:-128}
BATCH_SIZE=${BATCH_SIZE:-4}
TRAIN_ITERS=${TRAIN_ITERS:-300}
LR=${LR:-2e-3}
DS_CONFIG=${DS_CONFIG:-ds_configs/ds_zero2_bf16.json}
CHECKPOINT_DIR=${CHECKPOINT_DIR:-checkpoints/gpt2_ds}
MASTER_PORT=${MASTER_PORT:-29500}

deepspeed --num_gpus "$NUM_GPUS" --master_port "$MASTER_PORT" pretrain_gpt2.py \
    --model-parallel-size "$MP_SIZE" \
    --num-layers "$NUM_LAYERS" --hidden-size "$HIDDEN_SIZE" --num-attention-heads "$NUM_HEADS" \
    --seq-length "$SEQ_LENGTH" --batch-size "$BATCH_SIZE" --train-iters "$TRAIN_ITERS" \
    --lr "$LR" --lr-decay-style cosine --min-lr 1e-4 --warmup 0.05 \
    --log-interval 10 --eval-interval 100 --eval-iters 10 \
    --save "$CHECKPOINT_DIR" --load "$CHECKPOINT_DIR" --save-interval 100 \
    --deepspeed --deepspeed_config "$DS_CONFIG" \
    "$@"
