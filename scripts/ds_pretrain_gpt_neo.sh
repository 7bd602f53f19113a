#!/usr/bin/env bash
# GPT-Neo's architecture with the deepspeed launcher: global and local layers alternating, unscaled
# attention scores, no q/k/v biases, learned positions, GeLU, no dropout (GPT-Neo's configs; local layers then run
# FlexAttention's sliding-window kernel on a GPU); Adam as in GPT-Neo's own example configs
# (the run_deepspeed.sh ds_config; DS_CONFIG=ds_configs/ds_gpt_neo_adafactor.json LR=5e-2 for Adafactor).
# The local window is ATTENTION_WINDOW, default GPT-Neo's 256 but at most a quarter of SEQ_LENGTH, so that
# local layers stay local at short sequences. MODEL_SIZE=gpt-neo-125m (or -1.3b, -2.7b) and
# SEQ_LENGTH=2048 LR=2e-4 for the real shapes; the CPU default is the small quick-start shape.
SEQ=${SEQ_LENGTH:-128}
WINDOW=${ATTENTION_WINDOW:-$(( SEQ / 4 < 256 ? SEQ / 4 : 256 ))}
ENTRY=pretrain_gpt2.py BATCH_SIZE=${BATCH_SIZE:-4} DEFAULT_CHECKPOINT_DIR=checkpoints/gpt_neo \
    exec bash "$(dirname "$0")/run_deepspeed.sh" \
    --attention-types "global local" --attention-window "$WINDOW" --no-attention-scaling --no-qkv-bias \
    --attention-dropout 0 --hidden-dropout 0 "$@"
