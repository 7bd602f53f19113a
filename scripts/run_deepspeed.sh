#!/usr/bin/env bash
# ENTRY on NUM_GPUS processes of this node with the deepspeed launcher (CPU ranks over gloo when there
# is no GPU) and the ds_config DS_CONFIG (default ZeRO-2 bf16, which the CPU runs too; on GPUs without
# bf16 use ds_configs/ds_zero2_fp16.json). Sizes from the environment (scripts/defaults.sh); extra
# flags go to the entry script.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/defaults.sh
deepspeed --num_gpus "${NUM_GPUS:-2}" --master_port "${MASTER_PORT:-29500}" "$ENTRY" "${TRAIN_ARGS[@]}" \
    --deepspeed --deepspeed_config "${DS_CONFIG:-ds_configs/ds_zero2_bf16.json}" "$@"
