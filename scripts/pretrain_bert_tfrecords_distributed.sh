#!/usr/bin/env bash
# BERT from Google BERT's TFRecord files (create_pretraining_data.py; Megatron-LM v0's --use-tfrecords),
# data parallel on NPROC processes of this node with torchrun. The files' vocabulary and length must be
# the run's: TOKENIZER_MODEL_TYPE (default bert-large-uncased) or VOCAB_FILE, SEQ_LENGTH (default 128,
# the files' max_seq_length). Extra flags after the files go to pretrain_bert.py.
#   NPROC=8 bash scripts/pretrain_bert_tfrecords_distributed.sh data/tfrecords/part-*.tfrecord
FILES=()
while [[ $# -gt 0 && "$1" != --* ]]; do FILES+=("$1"); shift; done
if [[ ${#FILES[@]} -eq 0 ]]; then
    echo "usage: $0 FILE.tfrecord [FILE.tfrecord ...] [pretrain_bert.py flags]" >&2
    exit 2
fi
TOKENIZER=(--tokenizer-type BertWordPieceTokenizer)  # VOCAB_FILE goes in through scripts/defaults.sh
[[ -n "${VOCAB_FILE:-}" ]] || TOKENIZER+=(--tokenizer-model-type "${TOKENIZER_MODEL_TYPE:-bert-large-uncased}")
ENTRY=pretrain_bert.py BATCH_SIZE=${BATCH_SIZE:-4} SEQ_LENGTH=${SEQ_LENGTH:-128} \
    DEFAULT_CHECKPOINT_DIR=checkpoints/bert_tfrecords \
    exec bash "$(dirname "$0")/run_torchrun.sh" --use-tfrecords --train-data "${FILES[@]}" "${TOKENIZER[@]}" "$@"
