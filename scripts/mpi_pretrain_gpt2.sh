#!/usr/bin/env bash
# ENTRY on NP processes started by mpiexec / mpirun (MPICH, Open MPI, Intel MPI, Cray PALS), one per GPU:
# each reads its rank from MPI's variables (launch_environment.py), no launcher. On several nodes give
# the hosts in MPIEXEC_ARGS (--hostfile FILE --ppn N) and MASTER_ADDR, the first of them. Sizes from the
# environment (scripts/defaults.sh); extra flags go to the entry script.
set -euo pipefail
cd "$(dirname "$0")/.."
ENTRY=${ENTRY:-pretrain_gpt2.py}
source scripts/defaults.sh
run_or_print mpiexec -n "${NP:-2}" ${MPIEXEC_ARGS:-} ${MASTER_ADDR:+-genv MASTER_ADDR "$MASTER_ADDR"} \
    python3 "$ENTRY" "${TRAIN_ARGS[@]}" "$@"
