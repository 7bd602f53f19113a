#!/usr/bin/env bash
# Pretrain GPT-2 in one process (the CPU by default, or one GPU) on the bundled corpus.
# Sizes come from the environment (scripts/gpt2_defaults.sh); extra flags go to pretrain_gpt2.py, e.g.
#   bash scripts/pretrain_gpt2.sh --data-path data/my_corpus_text_document
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/gpt2_defaults.sh

python pretrain_gpt2.py "${GPT2_ARGS[@]}" "$@"
