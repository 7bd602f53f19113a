"""Rank discovery from each launcher's variables (launch_environment.py), as the launchers set them."""

import re
import sys

import pytest

from launch_environment import Launch, LaunchError, discover, expand_hostlist

TORCHRUN = {"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "node1",
            "MASTER_PORT": "29400"}
SRUN = {"SLURM_JOB_ID": "4242", "SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1", "SLURM_NODEID": "1",
        "SLURM_JOB_NODELIST": "gpu[07-08,11],cpu3", "SLURM_STEP_NODELIST": "gpu[08,11]",
        "SLURM_STEP_TASKS_PER_NODE": "4(x2)", "SLURM_TASKS_PER_NODE": "2(x4)"}
BATCH_STEP = {"SLURM_JOB_ID": "4242", "SLURM_PROCID": "0", "SLURM_NTASKS": "8", "SLURM_LOCALID": "0",
              "SLURM_JOB_NODELIST": "gpu[07-08]"}
HYDRA = {"PMI_RANK": "1", "PMI_SIZE": "2", "MPI_LOCALRANKID": "1", "MPI_LOCALNRANKS": "2"}  # `mpiexec -n 2` here
OPEN_MPI = {"OMPI_COMM_WORLD_RANK": "6", "OMPI_COMM_WORLD_SIZE": "8", "OMPI_COMM_WORLD_LOCAL_RANK": "2",
            "OMPI_COMM_WORLD_LOCAL_SIZE": "4", "MASTER_ADDR": "head"}
PALS = {"PMI_RANK": "5", "PMI_SIZE": "8", "PALS_LOCAL_RANKID": "1", "PALS_LOCAL_SIZE": "4", "MASTER_ADDR": "x3000c0"}


@pytest.mark.parametrize("hostlist, hosts", [
    ("node1", ["node1"]),
    ("gpu[07-08,11],cpu3", ["gpu07", "gpu08", "gpu11", "cpu3"]),
    ("r[1-2]n[09-10]", ["r1n09", "r1n10", "r2n09", "r2n10"]),
    ("a-b[8-10].ib", ["a-b8.ib", "a-b9.ib", "a-b10.ib"]),
])
def test_slurm_host_lists_expand_as_scontrol_shows_them(hostlist, hosts):
    assert expand_hostlist(hostlist) == hosts


@pytest.mark.parametrize("environ, expected", [
    ({}, ("one process", 0, 1, 0, 1, "127.0.0.1")),
    (TORCHRUN, ("torchrun / deepspeed", 3, 8, 1, 2, "node1")),
    (SRUN, ("Slurm", 5, 8, 1, 4, "gpu08")),
    ({**SRUN, "MASTER_ADDR": "login2"}, ("Slurm", 5, 8, 1, 4, "login2")),
    (HYDRA, ("MPI (PMI: MPICH, Cray PALS, Intel MPI)", 1, 2, 1, 2, "127.0.0.1")),
    ({**HYDRA, **BATCH_STEP}, ("MPI (PMI: MPICH, Cray PALS, Intel MPI)", 1, 2, 1, 2, "127.0.0.1")),
    (OPEN_MPI, ("Open MPI", 6, 8, 2, 4, "head")),
    (PALS, ("MPI (PMI: MPICH, Cray PALS, Intel MPI)", 5, 8, 1, 4, "x3000c0")),
    ({**PALS, "WORLD_SIZE": "8", "MASTER_PORT": "1234"}, ("MPI (PMI: MPICH, Cray PALS, Intel MPI)", 5, 8, 1, 4,
                                                          "x3000c0")),
    ({**TORCHRUN, **SRUN}, ("torchrun / deepspeed", 3, 8, 1, 2, "node1")),  # srun torchrun: torchrun's ranks
], ids=["nothing", "torchrun", "srun", "srun + MASTER_ADDR", "mpiexec", "mpiexec in a batch script", "Open MPI",
        "Cray PALS", "deepspeed --launcher mpich", "srun torchrun"])
def test_each_launcher_gives_its_rank_world_and_master(environ, expected):
    launch = discover(environ)
    assert (launch.launcher, launch.rank, launch.world_size, launch.local_rank, launch.local_world_size,
            launch.master_addr) == expected


def test_ports_come_from_master_port_else_the_slurm_job():
    assert discover(TORCHRUN).master_port == 29400
    assert discover(SRUN).master_port == 10000 + 4242
    assert discover({**SRUN, "MASTER_PORT": "6000"}).master_port == 6000
    assert discover(HYDRA).master_port == 29500
    line = discover(SRUN).describe()
    assert line == "launcher: Slurm; world size 8, rank 5 (local rank 1 of 4), master gpu08:14242"


@pytest.mark.parametrize("environ, message", [
    ({"RANK": "0", "MASTER_ADDR": "a"}, "RANK is set but WORLD_SIZE is not"),
    ({"PMI_SIZE": "2"}, "PMI_SIZE is set but PMI_RANK is not"),
    ({**SRUN, "SLURM_PROCID": "8"}, "SLURM_PROCID=8 is outside the world of SLURM_NTASKS=8 ranks"),
    ({**PALS, "WORLD_SIZE": "4"}, "WORLD_SIZE=4 but PMI_SIZE=8: the launcher and MPI count the job differently"),
    ({"OMPI_COMM_WORLD_RANK": "x", "OMPI_COMM_WORLD_SIZE": "2"}, "OMPI_COMM_WORLD_RANK='x' is not a rank"),
    ({"PMI_RANK": "5", "PMI_SIZE": "8", "PALS_LOCAL_SIZE": "4"}, "no local rank variable is set for rank 5 of 8"),
], ids=["half of torchrun's", "half of PMI's", "rank outside", "launcher and MPI disagree", "not a number",
        "no local rank"])
def test_variables_that_do_not_describe_one_job_are_one_line(environ, message):
    with pytest.raises(LaunchError, match=re.escape(message)):
        discover(environ)


def test_several_mpi_hosts_without_a_master_say_how_to_name_one(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # as here: no mpi4py
    with pytest.raises(LaunchError, match="8 ranks over several hosts and no MASTER_ADDR: set MASTER_ADDR"):
        discover({key: value for key, value in OPEN_MPI.items() if key != "MASTER_ADDR"})


def test_a_launch_is_written_where_torch_reads_it():
    from launch_environment import export
    environ = {}
    launch = export(discover(SRUN), environ)
    assert environ == {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4",
                       "MASTER_ADDR": "gpu08", "MASTER_PORT": "14242"}
    assert isinstance(launch, Launch)
    alone = export(discover({}), environ := {})
    assert environ["WORLD_SIZE"] == "1" and int(environ["MASTER_PORT"]) == alone.master_port > 0
