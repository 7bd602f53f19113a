# Sourced by the multi-node job scripts: the sizes of a GPU cluster run (every variable of
# scripts/defaults.sh still overrides them: MODEL_SIZE, SEQ_LENGTH, TRAIN_ITERS, TP_SIZE, PP_SIZE,
# DATA_PATH, VOCAB_FILE, MERGE_FILE, CHECKPOINT_PATH, ...), GPUS_PER_NODE (default 4), DS_CONFIG
# (default ZeRO-1, which pipeline stages can take), PRECISION (default --bf16; --fp16 on GPUs without
# bf16; empty: fp32), TENSORBOARD_DIR (empty: none), TIMEOUT_MINUTES (--distributed-timeout-minutes), and FIRST_HOST, the host rank 0 and the
# rendezvous live on: MASTER_ADDR, else the first of the scheduler's nodes (NODES: one host name a line).
ENTRY=${ENTRY:-pretrain_gpt2.py}
MODEL_SIZE=${MODEL_SIZE:-gpt2-350m}
SEQ_LENGTH=${SEQ_LENGTH:-1024}
TRAIN_ITERS=${TRAIN_ITERS:-300000}
LR=${LR:-3e-4}
DEFAULT_CHECKPOINT_DIR=checkpoints/$(basename "$ENTRY" .py)_multinode
GPUS_PER_NODE=${GPUS_PER_NODE:-4}
DS_CONFIG=${DS_CONFIG:-ds_configs/ds_zero1.json}
source scripts/defaults.sh
TENSORBOARD_DIR=${TENSORBOARD_DIR-runs/$(basename "$ENTRY" .py)}
TRAIN_ARGS+=(${PRECISION---bf16} --checkpoint-activations --distributed-timeout-minutes "${TIMEOUT_MINUTES:-10}"
             ${TENSORBOARD_DIR:+--tensorboard-dir "$TENSORBOARD_DIR"} --deepspeed --deepspeed_config "$DS_CONFIG")
NODES=$(tr -s ' ' '\n' <<< "${NODES:?the job script sets NODES from the allocation}" | sed '/^$/d')
FIRST_HOST=${MASTER_ADDR:-$(head -n 1 <<< "$NODES")}
MASTER_PORT=${MASTER_PORT:-29500}
