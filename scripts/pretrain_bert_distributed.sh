#!/usr/bin/env bash
# BERT, data parallel on NPROC processes of this node with torchrun.
ENTRY=pretrain_bert.py BATCH_SIZE=${BATCH_SIZE:-4} DEFAULT_CHECKPOINT_DIR=checkpoints/bert_distributed \
    exec bash "$(dirname "$0")/run_torchrun.sh" "$@"
