# Sourced by the launch scripts: sizes and schedule from the environment, with defaults that train a
# small model on a CPU in minutes, collected in TRAIN_ARGS. Set in the environment to change them:
# MODEL_SIZE (a --model-size preset, default small: 4 layers, hidden 128, 4 heads) or NUM_LAYERS
# HIDDEN_SIZE NUM_HEADS; SEQ_LENGTH BATCH_SIZE TRAIN_ITERS LR CHECKPOINT_DIR MP_SIZE. Megatron-LM's and
# Megatron-DeepSpeed's script variables work too: TP_SIZE (= MP_SIZE), PP_SIZE, DATA_PATH, VOCAB_FILE,
# MERGE_FILE, CHECKPOINT_PATH (= CHECKPOINT_DIR). A script names its own default folder in
# DEFAULT_CHECKPOINT_DIR. DRY_RUN=1: the script prints the command it would run instead of running it.
MODEL_SIZE=${MODEL_SIZE:-small}
SEQ_LENGTH=${SEQ_LENGTH:-128}
BATCH_SIZE=${BATCH_SIZE:-8}
TRAIN_ITERS=${TRAIN_ITERS:-300}
LR=${LR:-2e-3}
CHECKPOINT_DIR=${CHECKPOINT_DIR:-${CHECKPOINT_PATH:-${DEFAULT_CHECKPOINT_DIR:-checkpoints/$(basename "${ENTRY:?set ENTRY to the pretraining script}" .py)}}}

TRAIN_ARGS=(
    --model-parallel-size "${MP_SIZE:-${TP_SIZE:-1}}" ${PP_SIZE:+--pipe-parallel-size "$PP_SIZE"}
    ${DATA_PATH:+--data-path $DATA_PATH} ${VOCAB_FILE:+--vocab-file "$VOCAB_FILE"} ${MERGE_FILE:+--merge-file "$MERGE_FILE"}
    --model-size "$MODEL_SIZE" ${NUM_LAYERS:+--num-layers "$NUM_LAYERS"} ${HIDDEN_SIZE:+--hidden-size "$HIDDEN_SIZE"}
    ${NUM_HEADS:+--num-attention-heads "$NUM_HEADS"}
    --seq-length "$SEQ_LENGTH" --batch-size "$BATCH_SIZE" --train-iters "$TRAIN_ITERS"
    --lr "$LR" --lr-decay-style cosine --min-lr 1e-4 --warmup 0.05 --weight-decay 0.01 --clip-grad 1.0
    --log-interval 10 --eval-interval 100 --eval-iters 10 --split 949,50,1
    --save "$CHECKPOINT_DIR" --load "$CHECKPOINT_DIR" --save-interval 100
)

source scripts/run_or_print.sh
