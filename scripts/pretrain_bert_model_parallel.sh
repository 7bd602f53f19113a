#!/usr/bin/env bash
# BERT with MP_SIZE-way tensor model parallelism (default 2) under torchrun; NPROC / MP_SIZE replicas.
MP_SIZE=${MP_SIZE:-${TP_SIZE:-2}}
ENTRY=pretrain_bert.py MP_SIZE=$MP_SIZE DEFAULT_CHECKPOINT_DIR=checkpoints/bert_mp$MP_SIZE \
    exec bash "$(dirname "$0")/run_torchrun.sh" "$@"
