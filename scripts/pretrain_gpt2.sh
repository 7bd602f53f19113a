#!/usr/bin/env bash
# GPT-2 in one process on the bundled corpus (sizes: scripts/defaults.sh), e.g.
#   bash scripts/pretrain_gpt2.sh --data-path data/my_corpus_text_document
ENTRY=pretrain_gpt2.py DEFAULT_CHECKPOINT_DIR=checkpoints/gpt2 exec bash "$(dirname "$0")/run_one_process.sh" "$@"
