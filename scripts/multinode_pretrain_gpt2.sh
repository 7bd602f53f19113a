#!/usr/bin/env bash
# One deepspeed launch, on the first host of HOSTFILE, that starts the ranks of every host over ssh
# (passwordless ssh between the nodes, this repository at the same path on each). Called by the Slurm
# and PBS examples; sizes for a real run come from the environment: DATA_PATH (required), MP_SIZE,
# PP_SIZE (pipeline stages; with PP_SIZE > 1 use a ZeRO-0/1 DS_CONFIG such as ds_configs/ds_zero1.json),
# MODEL_SIZE, SEQ_LENGTH, BATCH_SIZE, TRAIN_ITERS, LR, DS_CONFIG, CHECKPOINT_DIR, TENSORBOARD_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
HOSTFILE=${1:?usage: multinode_pretrain_gpt2.sh HOSTFILE (lines "host slots=N")}
CHECKPOINT_DIR=${CHECKPOINT_DIR:-checkpoints/gpt2_multinode}

deepspeed --hostfile "$HOSTFILE" --master_addr "$(head -n 1 "$HOSTFILE" | cut -d' ' -f1)" \
    --master_port "${MASTER_PORT:-29500}" pretrain_gpt2.py \
    --model-parallel-size "${MP_SIZE:-2}" --pipe-parallel-size "${PP_SIZE:-1}" --model-size "${MODEL_SIZE:-gpt2-350m}" \
    --seq-length "${SEQ_LENGTH:-1024}" --batch-size "${BATCH_SIZE:-8}" --train-iters "${TRAIN_ITERS:-300000}" \
    --lr "${LR:-3e-4}" --lr-decay-style cosine --min-lr 3e-5 --warmup 0.01 --checkpoint-activations \
    --data-path ${DATA_PATH:?set DATA_PATH to a preprocessed .bin/.idx prefix, or weight-prefix pairs} \
    --save "$CHECKPOINT_DIR" --load "$CHECKPOINT_DIR" --save-interval 1000 \
    --log-interval 100 --eval-interval 1000 --eval-iters 50 --tensorboard-dir "${TENSORBOARD_DIR:-runs/gpt2}" \
    --deepspeed --deepspeed_config "${DS_CONFIG:-ds_configs/ds_zero2_bf16.json}"
