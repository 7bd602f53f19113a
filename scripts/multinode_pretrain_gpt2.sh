#!/usr/bin/env bash
# One deepspeed launch over several nodes: writes HOSTFILE from NODES (one host a line; GPUS_PER_NODE
# slots each) and starts the ranks of every host with LAUNCHER: pdsh (default: passwordless ssh between
# the nodes, this repository at the same path on each), slurm (srun inside an allocation), openmpi or
# mpich (mpirun / mpiexec). Called by scripts/slurm_deepspeed.sbatch and scripts/pbs_deepspeed.pbs;
# sizes and paths from the environment (scripts/cluster.sh, scripts/defaults.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
HOSTFILE=${1:?usage: NODES=\"host1 host2\" multinode_pretrain_gpt2.sh HOSTFILE [flags]}
shift
source scripts/cluster.sh
sed "s/\$/ slots=${GPUS_PER_NODE}/" <<< "$NODES" > "$HOSTFILE"
LAUNCHER=${LAUNCHER:-pdsh}
case "$LAUNCHER" in
    openmpi) LAUNCHER_ARGS=(--launcher_args "-x MASTER_ADDR=$FIRST_HOST -x MASTER_PORT=$MASTER_PORT") ;;
    pdsh|slurm|mpich) LAUNCHER_ARGS=() ;;
    *) echo "LAUNCHER=$LAUNCHER: use pdsh, slurm, openmpi or mpich" >&2; exit 2 ;;
esac
run_or_print deepspeed --hostfile "$HOSTFILE" --launcher "$LAUNCHER" "${LAUNCHER_ARGS[@]}" \
    --master_addr "$FIRST_HOST" --master_port "$MASTER_PORT" "$ENTRY" "${TRAIN_ARGS[@]}" "$@"
