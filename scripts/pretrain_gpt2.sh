#!/usr/bin/env bash
# Pretrain GPT-2 in one process (the CPU by default, or one GPU) on the bundled corpus.
# Sizes come from the environment; the defaults train a small model on a laptop CPU in minutes.
# Extra flags go to pretrain_gpt2.py, e.g.:  bash scripts/pretrain_gpt2.sh --data-path data/my_text_document
set -euo pipefail
cd "$(dirname "$0")/.."

NUM_LAYERS=${NUM_LAYERS:-4}
HIDDEN_SIZE=${HIDDEN_SIZE:-128}
NUM_HEADS=${NUM_HEADS:-4}
SEQ_LENGTH=${SEQ_LENGTH:-128}
BATCH_SIZE=${BATCH_SIZE:-8}
TRAIN_ITERS=${TRAIN_ITERS:-300}
LR=${LR:-2e-3}
CHECKPOINT_DIR=${CHECKPOINT_DIR:-checkpoints/gpt2}

python pretrain_gpt2.py \
    --num-layers "$NUM_LAYERS" --hidden-size "$HIDDEN_SIZE" --num-attention-heads "$NUM_HEADS" \
    --seq-length "$SEQ_LENGTH" --batch-size "$BATCH_SIZE" --train-iters "$TRAIN_ITERS" \
    --lr "$LR" --lr-decay-style cosine --min-lr 1e-4 --warmup 0.05 --weight-decay 0.01 --clip-grad 1.0 \
    --log-interval 10 --eval-interval 100 --eval-iters 10 --split 949,50,1 \
    --save "$CHECKPOINT_DIR" --load "$CHECKPOINT_DIR" --save-interval 100 \
    "$@"
