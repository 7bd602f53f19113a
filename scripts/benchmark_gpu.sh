#!/usr/bin/env bash
# GPU throughput of pretrain_gpt2.py's whole training step on one GPU: gpt2-350m and gpt2-1.3b in bf16
# (and fp16) at ZeRO-1 and ZeRO-2, with and without activation checkpointing, DeepSpeed's fused Adam,
# torch's SDPA (flash attention on the GPU). Prints one row per run: tokens/s, TFLOP/s per GPU (model
# FLOPs: 6 x parameters + attention, recomputation not counted) and MFU against the card's dense bf16
# peak (PEAK_TFLOPS overrides the table below). ITERS sets the iterations per run (the last log window,
# after warm-up, is reported); RUNS picks rows by name (default: all). `--dry-run` (on any machine, a
# CPU too) only checks that every row's flags parse and fit together, and prints the command lines.
set -euo pipefail
DRY_RUN=""
DRY_ROWS=""
[[ "${1:-}" == "--dry-run" ]] && DRY_RUN=1
cd "$(dirname "$0")/.."
ITERS=${ITERS:-30}
LOGS=${LOGS:-$(mktemp -d)}
PEAK_TFLOPS=${PEAK_TFLOPS:-$([[ -n "$DRY_RUN" ]] && echo 0 || python3 - <<'EOF'
import torch
name = torch.cuda.get_device_name()
peaks = {"H200": 989, "H100": 989, "A100": 312, "L40S": 362, "A10G": 125, "4090": 165}
print(next((peak for key, peak in peaks.items() if key in name), 0))
EOF
)}
GPU=$([[ -n "$DRY_RUN" ]] && echo "none (dry run)" || python3 -c "import torch; print(torch.cuda.get_device_name())")

# name | model size | micro batch | precision | ZeRO stage | extra flags
RUN_TABLE="
350m-bf16-z1|gpt2-350m|8|--bf16|1|
350m-bf16-z2|gpt2-350m|8|--bf16|2|
350m-fp16-z2|gpt2-350m|8|--fp16|2|
350m-bf16-z1-ckpt|gpt2-350m|8|--bf16|1|--checkpoint-activations
350m-bf16-z1-compile|gpt2-350m|8|--bf16|1|--compile
350m-autocast-z1|gpt2-350m|8||1|--deepspeed --deepspeed_config ds_configs/ds_zero1_bf16_autocast.json
1.3b-bf16-z1|gpt2-1.3b|8|--bf16|1|
1.3b-bf16-z2-ckpt|gpt2-1.3b|8|--bf16|2|--checkpoint-activations
1.3b-bf16-z1-compile|gpt2-1.3b|8|--bf16|1|--compile
1.3b-autocast-z1|gpt2-1.3b|8||1|--deepspeed --deepspeed_config ds_configs/ds_zero1_bf16_autocast.json
"

echo "GPU: $GPU | dense bf16 peak used for MFU: ${PEAK_TFLOPS} TFLOP/s | seq 1024 | logs in $LOGS"
[[ -n "$DRY_RUN" ]] || printf "%-20s %14s %16s %8s\n" run "tokens/s" "TFLOP/s per GPU" MFU
while IFS='|' read -r name size micro precision stage extra; do
    [[ -z "$name" ]] && continue
    [[ -n "${RUNS:-}" && " $RUNS " != *" $name "* ]] && continue
    # shellcheck disable=SC2206
    flags=(--model-size "$size" --seq-length 1024 --batch-size "$micro" $precision --zero-stage "$stage" $extra
           --train-iters "$ITERS" --log-interval 10 --eval-interval 100000 --eval-iters 1 --lr 1e-4
           --hidden-dropout 0.1 --attention-dropout 0.1)
    if [[ -n "$DRY_RUN" ]]; then
        DRY_ROWS+="$name ${flags[*]}"$'\n'
        continue
    fi
    if ! python3 pretrain_gpt2.py "${flags[@]}" >"$LOGS/$name.log" 2>&1; then
        printf "%-20s failed: see %s\n" "$name" "$LOGS/$name.log"
        continue
    fi
    grep "TFLOP/s per device" "$LOGS/$name.log" | tail -1 | awk -v name="$name" -v peak="$PEAK_TFLOPS" -F'|' '{
        for (i = 1; i <= NF; i++) {
            split($i, kv, ": ")
            if ($i ~ /tokens per second/) tokens = kv[2]
            if ($i ~ /TFLOP\/s per device/) tflops = kv[2]
        }
        mfu = peak > 0 ? sprintf("%.1f%%", 100 * tflops / peak) : "n/a"
        printf "%-20s %14.0f %16.1f %8s\n", name, tokens, tflops, mfu
    }'
done <<<"$RUN_TABLE"
if [[ -n "$DRY_RUN" ]]; then  # every row's flags through the parser, in one process
    DRY_ROWS="$DRY_ROWS" python3 - <<'EOF'
import os
import sys

from arguments import get_args

for row in os.environ["DRY_ROWS"].splitlines():
    name, *flags = row.split()
    try:
        get_args(flags)
    except SystemExit:
        print(f"{name:20s} bad flags: pretrain_gpt2.py {' '.join(flags)}")
        sys.exit(2)
    print(f"{name:20s} flags ok: pretrain_gpt2.py {' '.join(flags)}")
EOF
fi
