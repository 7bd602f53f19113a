#!/usr/bin/env bash
# GPT-2 with tensor model parallelism (MP_SIZE ranks share each layer) under torchrun; NPROC / MP_SIZE
# data-parallel replicas. Sizes from the environment; extra flags go to pretrain_gpt2.py.
set -euo pipefail
cd "$(dirname "$0")/.."

NPROC=${NPROC:-2}
MP_SIZE=${MP_SIZE:-2}
NUM_LAYERS=${NUM_LAYERS:-4}
HIDDEN_SIZE=${HIDDEN_SIZE:-128}
NUM_HEADS=${NUM_HEADS:-4}
SEQ_LENGTH=${SEQ_LENGTH:-128}
BATCH_SIZE=${BATCH_SIZE:-8}
TRAIN_ITERS=${TRAIN_ITERS:-300}
LR=${LR:-2e-3}
CHECKPOINT_DIR=${CHECKPOINT_DIR:-checkpoints/gpt2_mp${MP_SIZE}}

torchrun --standalone --nproc_per_node "$NPROC" pretrain_gpt2.py \
    --model-parallel-size "$MP_SIZE" \
    --num-layers "$NUM_LAYERS" --hidden-size "$HIDDEN_SIZE" --num-attention-heads "$NUM_HEADS" \
    --seq-length "$SEQ_LENGTH" --batch-size "$BATCH_SIZE" --train-iters "$TRAIN_ITERS" \
    --lr "$LR" --lr-decay-style cosine --min-lr 1e-4 --warmup 0.05 \
    --log-interval 10 --eval-interval 100 --eval-iters 10 \
    --save "$CHECKPOINT_DIR" --load "$CHECKPOINT_DIR" --save-interval 100 \
    "$@"
