#!/usr/bin/env bash
# ENTRY on NUM_GPUS processes of this node with the deepspeed launcher (CPU ranks over gloo when there
# is no GPU) and the ds_config DS_CONFIG (default ZeRO-2 bf16 on GPUs and on CPUs with native bf16, ZeRO-2
# fp32 on CPUs that would only emulate bf16; on GPUs without bf16 use ds_configs/ds_zero2_fp16.json). Sizes from the environment (scripts/defaults.sh); extra
# flags go to the entry script.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/defaults.sh
if [[ -z "${DS_CONFIG:-}" ]]; then  # bf16 where the hardware has it, else the flags' precision (fp32)
    DS_CONFIG=$(python3 -c "import torch; native = torch.cuda.is_available() or torch.ops.mkldnn._is_mkldnn_bf16_supported()
print('ds_configs/ds_zero2_bf16.json' if native else 'ds_configs/ds_zero2.json')")
fi
run_or_print deepspeed --num_gpus "${NUM_GPUS:-2}" --master_port "${MASTER_PORT:-29500}" "$ENTRY" "${TRAIN_ARGS[@]}" \
    --deepspeed --deepspeed_config "$DS_CONFIG" "$@"
