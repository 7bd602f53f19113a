#!/usr/bin/env bash
# Text from a GPT-2 checkpoint (default: the one scripts/pretrain_gpt2.sh trains), e.g.
#   bash scripts/generate_text.sh                                   # type prompts; an empty one: unconditional
#   bash scripts/generate_text.sh --sample-input-file prompts.txt --sample-output-file samples.jsonl
#   MP_SIZE=2 bash scripts/generate_text.sh ...                     # two tensor-parallel ranks (deepspeed launcher)
# Sampling from the environment: TEMPERATURE (0.9), TOP_P (0.9), TOP_K (0), or GREEDY=1; OUT_SEQ_LENGTH (128).
set -euo pipefail
cd "$(dirname "$0")/.."
MP_SIZE=${MP_SIZE:-1}
if [ -n "${GREEDY:-}" ]; then
    SAMPLING=(--greedy)
else
    SAMPLING=(--temperature "${TEMPERATURE:-0.9}" --top_p "${TOP_P:-0.9}" --top_k "${TOP_K:-0}")
fi
if [ "$MP_SIZE" = 1 ]; then
    LAUNCH=(python)
else
    LAUNCH=(deepspeed --num_gpus "$MP_SIZE" --master_port "${MASTER_PORT:-29500}")
fi
source scripts/run_or_print.sh
run_or_print "${LAUNCH[@]}" generate_samples.py --load "${CHECKPOINT_DIR:-${CHECKPOINT_PATH:-checkpoints/gpt2}}" \
    --model-parallel-size "$MP_SIZE" --out-seq-length "${OUT_SEQ_LENGTH:-128}" "${SAMPLING[@]}" "$@"
