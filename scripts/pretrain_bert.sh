#!/usr/bin/env bash
# BERT in one process on the bundled corpus (sizes: scripts/defaults.sh). With VOCAB_FILE set, BERT's
# WordPiece from that vocab.txt; otherwise a SentencePiece model trained on first use and cached.
ARGS=()
[ -n "${VOCAB_FILE:-}" ] && ARGS=(--tokenizer-type BertWordPieceLowerCase --vocab-file "$VOCAB_FILE")
ENTRY=pretrain_bert.py DEFAULT_CHECKPOINT_DIR=checkpoints/bert \
    exec bash "$(dirname "$0")/run_one_process.sh" "${ARGS[@]}" "$@"
