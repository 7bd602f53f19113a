#!/usr/bin/env bash
# GPT-2 with MP_SIZE-way tensor model parallelism (default 2) under torchrun; NPROC / MP_SIZE replicas.
MP_SIZE=${MP_SIZE:-${TP_SIZE:-2}}
ENTRY=pretrain_gpt2.py MP_SIZE=$MP_SIZE DEFAULT_CHECKPOINT_DIR=checkpoints/gpt2_mp$MP_SIZE \
    exec bash "$(dirname "$0")/run_torchrun.sh" "$@"
