"""Which launcher started this process: its rank, the world size and the rendezvous address.

torch.distributed reads RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; torchrun and the
deepspeed launcher set them, schedulers and MPI do not. `discover` reads them from whichever launcher
started the process, in this order:

1. torchrun, the deepspeed launcher (and its mpich/impi runners): RANK / WORLD_SIZE.
2. Open MPI (mpirun, `deepspeed --launcher openmpi`): OMPI_COMM_WORLD_RANK / _SIZE / _LOCAL_RANK.
3. MPICH's Hydra, Cray PALS, Intel MPI, `srun --mpi=pmi2`: PMI_RANK / PMI_SIZE, the local rank from
   MPI_LOCALRANKID or PALS_LOCAL_RANKID.
4. Slurm (`srun python ...`, `deepspeed --launcher slurm`): SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID.
   It comes after MPI because an mpiexec inside a batch script inherits the batch step's SLURM_PROCID=0.
5. None of them: one process.

The master is MASTER_ADDR where set, else the first host of the Slurm step (SLURM_STEP_NODELIST, else
SLURM_JOB_NODELIST), else this host when every rank is local, else rank 0's host name from mpi4py where it
is installed. The port is MASTER_PORT, else one derived from the Slurm job id (two jobs sharing a node
do not meet), else 29500. Ranks that cannot agree (a rank outside the world, half of a launcher's
variables, two launchers that count the world differently) are one UsageError, never a run alone.
"""

import dataclasses
import os
import re
import socket
import sys

DEFAULT_PORT = 29500


class LaunchError(Exception):
    """The launcher's variables do not describe one job: printed as one line."""


@dataclasses.dataclass(frozen=True)
class Launch:
    launcher: str
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    master_addr: str
    master_port: int

    def describe(self):
        return (f"launcher: {self.launcher}; world size {self.world_size}, rank {self.rank} (local rank "
                f"{self.local_rank} of {self.local_world_size}), master {self.master_addr}:{self.master_port}")


def expand_hostlist(hostlist):
    """Slurm's compressed host list ("gpu[01-03,07],login1") as host names, in order (scontrol show hostnames)."""
    hosts = []
    for name in re.findall(r"[^,\[]+(?:\[[^\]]*\][^,\[]*)*", hostlist):
        parts = re.split(r"\[([^\]]*)\]", name)
        expanded = [parts[0]]
        for ranges, suffix in zip(parts[1::2], parts[2::2]):
            numbers = []
            for piece in ranges.split(","):
                low, _, high = piece.partition("-")
                width = len(low)
                numbers += [f"{n:0{width}d}" for n in range(int(low), int(high or low) + 1)]
            expanded = [f"{head}{n}{suffix}" for head in expanded for n in numbers]
        hosts += expanded
    return hosts


def _integer(environ, name):
    value = environ[name]
    if not value.strip().isdigit():
        raise LaunchError(f"{name}={value!r} is not a rank or a count: the launcher's environment is damaged")
    return int(value)


def _read(environ, launcher, rank, size, local_rank_names, local_size_names):
    if (rank in environ) != (size in environ):
        have, missing = (rank, size) if rank in environ else (size, rank)
        raise LaunchError(f"{have} is set but {missing} is not: {launcher} sets both; start the job with {launcher}, "
                          f"or unset {have} to run one process")
    found = dict(rank=_integer(environ, rank), world_size=_integer(environ, size))
    found["local_rank"] = next((_integer(environ, n) for n in local_rank_names if n in environ), None)
    found["local_world_size"] = next((_integer(environ, n) for n in local_size_names if n in environ), None)
    if not 0 <= found["rank"] < found["world_size"]:
        raise LaunchError(f"{rank}={found['rank']} is outside the world of {size}={found['world_size']} ranks")
    return found


def _slurm_tasks_on_this_node(environ):
    """SLURM_TASKS_PER_NODE ("4(x2),3") names each node's count; this node's is SLURM_NODEID's entry."""
    counts = []
    for entry in environ.get("SLURM_STEP_TASKS_PER_NODE", environ.get("SLURM_TASKS_PER_NODE", "")).split(","):
        match = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", entry.strip())
        if match:
            counts += [int(match.group(1))] * int(match.group(2) or 1)
    node = int(environ.get("SLURM_NODEID", "0"))
    return counts[node] if node < len(counts) else None


LAUNCHERS = (  # (name, rank, size, local rank variables, local size variables)
    ("torchrun / deepspeed", "RANK", "WORLD_SIZE", ("LOCAL_RANK",), ("LOCAL_WORLD_SIZE", "LOCAL_SIZE")),
    ("Open MPI", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", ("OMPI_COMM_WORLD_LOCAL_RANK",),
     ("OMPI_COMM_WORLD_LOCAL_SIZE",)),
    ("MPI (PMI: MPICH, Cray PALS, Intel MPI)", "PMI_RANK", "PMI_SIZE", ("MPI_LOCALRANKID", "PALS_LOCAL_RANKID"),
     ("MPI_LOCALNRANKS", "PALS_LOCAL_SIZE")),
    ("Slurm", "SLURM_PROCID", "SLURM_NTASKS", ("SLURM_LOCALID",), ()),
)


def _which(environ):
    """(launcher name, its variables' values) of the first launcher whose variables are set, else None."""
    if "RANK" not in environ and "WORLD_SIZE" in environ and "PMI_RANK" in environ:
        # `deepspeed --launcher mpich` exports WORLD_SIZE and the master, and leaves the rank to PMI
        pmi = _read(environ, *LAUNCHERS[2])
        if pmi["world_size"] != _integer(environ, "WORLD_SIZE"):
            raise LaunchError(f"WORLD_SIZE={environ['WORLD_SIZE']} but PMI_SIZE={pmi['world_size']}: the launcher "
                              "and MPI count the job differently; start as many MPI ranks as the launcher expects")
        return LAUNCHERS[2][0], pmi
    for launcher, rank, size, local_ranks, local_sizes in LAUNCHERS:
        if rank in environ or size in environ:
            if launcher == "Slurm" and "SLURM_NTASKS" not in environ and "SLURM_NPROCS" in environ:
                size = "SLURM_NPROCS"
            found = _read(environ, launcher, rank, size, local_ranks, local_sizes)
            if launcher == "Slurm" and found["local_world_size"] is None:
                found["local_world_size"] = _slurm_tasks_on_this_node(environ)
            return launcher, found
    return None


def _master_addr(environ, launcher, world_size, local_world_size):
    if environ.get("MASTER_ADDR"):
        return environ["MASTER_ADDR"]
    nodelist = environ.get("SLURM_STEP_NODELIST") or environ.get("SLURM_JOB_NODELIST")
    if launcher == "Slurm" and nodelist:
        return expand_hostlist(nodelist)[0]
    if world_size == 1 or local_world_size == world_size:
        return "127.0.0.1"
    try:
        from mpi4py import MPI
    except ImportError:
        raise LaunchError(f"{launcher}: {world_size} ranks over several hosts and no MASTER_ADDR: set MASTER_ADDR to "
                          "the first host of the job (and export it to every rank: mpirun -x MASTER_ADDR, mpiexec "
                          "-genv MASTER_ADDR ...), or install mpi4py to take rank 0's host name from MPI") from None
    return MPI.COMM_WORLD.bcast(socket.gethostname(), root=0)


def discover(environ=None):
    """The Launch this process belongs to (see the module docstring); LaunchError when the variables disagree."""
    environ = os.environ if environ is None else environ
    found = _which(environ)
    if found is None:
        return Launch("one process", 0, 1, 0, 1, "127.0.0.1", int(environ.get("MASTER_PORT", 0)) or None)
    launcher, values = found
    if values["local_rank"] is None:
        values["local_rank"] = values["rank"] if values["local_world_size"] in (None, values["world_size"]) else None
    if values["local_rank"] is None:
        raise LaunchError(f"{launcher}: no local rank variable is set for rank {values['rank']} of "
                          f"{values['world_size']}; set LOCAL_RANK (the rank's index on its node)")
    local_world_size = values["local_world_size"] or values["world_size"]
    if "SLURM_JOB_ID" in environ and not environ.get("MASTER_PORT"):
        port = 10000 + int(environ["SLURM_JOB_ID"]) % 50000
    else:
        port = int(environ.get("MASTER_PORT") or DEFAULT_PORT)
    return Launch(launcher, values["rank"], values["world_size"], values["local_rank"], local_world_size,
                  _master_addr(environ, launcher, values["world_size"], local_world_size), port)


def free_port():
    """A TCP port nothing listens on now, for a rendezvous on this machine."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def export(launch, environ=None):
    """Write the launch into the variables torch.distributed and DeepSpeed read (a free port for one process)."""
    environ = os.environ if environ is None else environ
    port = launch.master_port or free_port()
    environ.update(RANK=str(launch.rank), WORLD_SIZE=str(launch.world_size), LOCAL_RANK=str(launch.local_rank),
                   LOCAL_WORLD_SIZE=str(launch.local_world_size), MASTER_ADDR=launch.master_addr,
                   MASTER_PORT=str(port))
    return dataclasses.replace(launch, master_port=port)


if __name__ == "__main__":  # for job scripts: python launch_environment.py hostnames "$SLURM_JOB_NODELIST"
    if sys.argv[1:2] != ["hostnames"] or len(sys.argv) != 3:
        sys.exit("usage: python launch_environment.py hostnames HOSTLIST")
    print("\n".join(expand_hostlist(sys.argv[2])))
