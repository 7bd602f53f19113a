#!/usr/bin/env bash
# GPT-2, data parallel on NPROC processes of this node with torchrun.
ENTRY=pretrain_gpt2.py BATCH_SIZE=${BATCH_SIZE:-4} DEFAULT_CHECKPOINT_DIR=checkpoints/gpt2_distributed \
    exec bash "$(dirname "$0")/run_torchrun.sh" "$@"
