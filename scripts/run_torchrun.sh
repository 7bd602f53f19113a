#!/usr/bin/env bash
# ENTRY on NPROC processes of this node with torchrun (GPUs, or CPU ranks over gloo); MP_SIZE of them
# share each layer (tensor parallelism), the rest is data parallelism. Sizes from the environment
# (scripts/defaults.sh); extra flags go to the entry script. Several nodes: NNODES agents, one per node
# (started by srun or mpiexec, or by hand on each), meet by c10d rendezvous at RDZV_ENDPOINT (the first
# node's host:port) under RDZV_ID; NNODES=1 (the default) is --standalone.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/defaults.sh
if [[ "${NNODES:-1}" == 1 ]]; then
    RENDEZVOUS=(--standalone)
else
    RENDEZVOUS=(--nnodes "$NNODES" --rdzv_backend c10d --max_restarts 0 --rdzv_id "${RDZV_ID:-$(basename "$ENTRY" .py)}"
                --rdzv_endpoint "${RDZV_ENDPOINT:?set RDZV_ENDPOINT to the first node\'s host:port}")
fi
run_or_print torchrun "${RENDEZVOUS[@]}" --nproc_per_node "${NPROC:-${GPUS_PER_NODE:-2}}" "$ENTRY" "${TRAIN_ARGS[@]}" "$@"
