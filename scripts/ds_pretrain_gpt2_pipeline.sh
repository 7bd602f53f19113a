#!/usr/bin/env bash
# GPT-2 in PP_SIZE pipeline stages (x MP_SIZE tensor-parallel ranks, the rest data parallel) with the
# deepspeed launcher and ZeRO-1 (DeepSpeed's pipeline engine takes ZeRO stage 0 or 1), e.g.
#   NUM_GPUS=2 bash scripts/ds_pretrain_gpt2_pipeline.sh                       # 2 stages
#   NUM_GPUS=8 PP_SIZE=2 MP_SIZE=2 BATCH_SIZE=4 bash scripts/ds_pretrain_gpt2_pipeline.sh \
#       --gradient-accumulation-steps 8 --data-path data/my_corpus_text_document   # 3D: TP 2 x PP 2 x DP 2
# Micro-batches flow through the stages --gradient-accumulation-steps at a time; more of them keep
# the stages busier. --pipe-partition-method chooses how layers are spread over the stages.
ENTRY=pretrain_gpt2.py DEFAULT_CHECKPOINT_DIR=checkpoints/gpt2_pipeline \
    DS_CONFIG=${DS_CONFIG:-ds_configs/ds_zero1.json} \
    exec bash "$(dirname "$0")/run_deepspeed.sh" --pipe-parallel-size "${PP_SIZE:-2}" "$@"
