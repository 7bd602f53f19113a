#!/usr/bin/env bash
# GPT-NeoX's architecture with the deepspeed launcher: rotary positions on a quarter of each head, exact
# GeLU, parallel residuals, an untied output embedding; ZeRO-1 AdamW (0.9, 0.95)
# (ds_configs/ds_gpt_neox_zero1.json). MODEL_SIZE=pythia-160m (or gpt-neox-20b) for the real shapes, with
# their tokenizer: VOCAB_FILE=path/to/tokenizer.json and the extra flag --tokenizer-type HFTokenizer (data
# preprocessed with the same flags); the CPU default is the small quick-start shape on GPT-2's BPE.
ENTRY=pretrain_gpt2.py BATCH_SIZE=${BATCH_SIZE:-4} DS_CONFIG=${DS_CONFIG:-ds_configs/ds_gpt_neox_zero1.json} \
    DEFAULT_CHECKPOINT_DIR=checkpoints/gpt_neox exec bash "$(dirname "$0")/run_deepspeed.sh" \
    --position-embedding-type rotary --rotary-pct 0.25 --activation gelu --parallel-residual --untie-embeddings "$@"
