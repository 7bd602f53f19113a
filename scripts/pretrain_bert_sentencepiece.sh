#!/usr/bin/env bash
# BERT with a custom SentencePiece tokenizer: if no model exists at TOKENIZER_PATH, one is trained first
# (VOCAB_SIZE pieces, TOKENIZER_MODEL_TYPE bpe or unigram) from the training data, then used.
#   TRAIN_DATA=my_corpus.jsonl TOKENIZER_PATH=tokenizers/my_spm.model bash scripts/pretrain_bert_sentencepiece.sh
ENTRY=pretrain_bert.py DEFAULT_CHECKPOINT_DIR=checkpoints/bert_sentencepiece \
    exec bash "$(dirname "$0")/run_one_process.sh" --tokenizer-type SentencePieceTokenizer \
    --tokenizer-path "${TOKENIZER_PATH:-checkpoints/bert_sentencepiece/tokenizer.model}" \
    --vocab-size "${VOCAB_SIZE:-8000}" --tokenizer-model-type "${TOKENIZER_MODEL_TYPE:-bpe}" \
    --train-data "${TRAIN_DATA:-sample}" "$@"
