"""Two "nodes" on this machine, launched the way clusters launch: two torchrun agents meeting by c10d
rendezvous, a real mpiexec (PyPI's mpich), and srun's environment for two processes. Each logs one
process's losses and resumes exactly (srun's after a rank stopped with SIGSTOP, which ends the job within
the timeout with a line naming it; mpiexec's after a rank killed, which ends the job); a job that never
assembles stops with one line. Dropout is off so
that two ranks log one process's losses; resumes with dropout on: tests/test_launchers.py, test_resume.py."""

import os
import signal
import subprocess
import sys
import time

import pytest
from launches import (
    REPO,
    dry_run,
    entry_argv,
    logged_losses,
    run_script,
    same_weights,
    script_environment,
    unbroken_weights,
)

from checkpointing import read_checkpoint
from launch_environment import free_port

pytestmark = pytest.mark.distributed  # real launches of several processes

ITERS, FIRST_LAUNCH = 10, 5


def _flags(tmp_path):
    return ["--tokenizer-type", "CharacterLevelTokenizer", "--data-cache-dir", str(tmp_path), "--log-interval", "1",
            "--eval-iters", "0", "--num-workers", "0", "--hidden-dropout", "0", "--attention-dropout", "0"]


def _sizes(data_prefix, checkpoints, batch_size=4, iters=ITERS):
    return {"MODEL_SIZE": "tiny", "SEQ_LENGTH": "32", "BATCH_SIZE": str(batch_size), "TRAIN_ITERS": str(iters),
            "DATA_PATH": data_prefix, "CHECKPOINT_PATH": str(checkpoints), "TENSORBOARD_DIR": "",
            "PRECISION": "", "LR": "2e-3", "MASTER_PORT": str(free_port())}


@pytest.fixture(scope="module")
def one_process_losses(tmp_path_factory, data_prefix):
    """scripts/pretrain_gpt2.sh's run in one process, the global batch of two ranks of 4: the reference."""
    from distributed import run_distributed
    from gpt2_runs import train
    tmp_path = tmp_path_factory.mktemp("one-process")
    argv = entry_argv(dry_run("pretrain_gpt2.sh", _sizes(data_prefix, tmp_path / "ckpt", batch_size=8),
                              *_flags(tmp_path)))
    losses = run_distributed(1, train, argv)[0]
    return dict(enumerate(losses, start=1))


def _two_torchrun_agents(env, flags):
    port = free_port()
    agents = [subprocess.Popen(["bash", os.path.join(REPO, "scripts", "run_torchrun.sh"), *flags],
                               env=script_environment(**env, NNODES="2", NPROC="1", RDZV_ID="two-nodes",
                                                      RDZV_ENDPOINT=f"127.0.0.1:{port}", ENTRY="pretrain_gpt2.py"),
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
              for _ in range(2)]
    outputs = [agent.communicate(timeout=300)[0] for agent in agents]
    assert all(agent.returncode == 0 for agent in agents), "\n".join(outputs)[-4000:]
    return "\n".join(outputs)


def _srun_processes(env, flags, job_id="4242"):
    """slurm_srun.sbatch's srun command run as srun would: one process per task, srun's variables set."""
    words = dry_run("slurm_srun.sbatch", {**env, "SLURM_JOB_NODELIST": "localhost", "SLURM_JOB_ID": job_id,
                                          "SLURM_SUBMIT_DIR": REPO, "GPUS_PER_NODE": "2"}, *flags)
    command = [sys.executable, *words[words.index("python3") + 1:]]
    tasks = [subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=script_environment(**env, SLURM_JOB_ID=job_id, SLURM_PROCID=str(rank),
                                                     SLURM_LOCALID=str(rank), SLURM_NTASKS="2", SLURM_NODEID="0",
                                                     SLURM_STEP_NODELIST="localhost", SLURM_STEP_TASKS_PER_NODE="2"))
             for rank in range(2)]
    return tasks


def test_two_torchrun_agents_log_one_process_losses_and_resume(tmp_path, data_prefix, one_process_losses):
    env, flags = _sizes(data_prefix, tmp_path / "ckpt"), _flags(tmp_path)
    first = _two_torchrun_agents(env, [*flags, "--exit-interval", str(FIRST_LAUNCH)])
    assert "> launcher: torchrun / deepspeed; world size 2, rank 0" in first, first[-3000:]
    assert "data parallel 2" in first and f"exiting at iteration {FIRST_LAUNCH} (--exit-interval)" in first
    second = _two_torchrun_agents(env, flags)
    assert sorted(logged_losses(second)) == list(range(FIRST_LAUNCH + 1, ITERS + 1)), second[-3000:]
    assert {**logged_losses(first), **logged_losses(second)} == pytest.approx(one_process_losses, rel=1e-5)
    assert (tmp_path / "ckpt" / "latest").read_text().strip() == f"global_step{ITERS}"


def test_mpiexec_ranks_log_one_process_losses_and_a_rank_that_dies_takes_the_job_down(tmp_path, data_prefix,
                                                                                      one_process_losses):
    """`mpiexec -n 2` (PyPI's MPICH) of scripts/mpi_pretrain_gpt2.sh; rank 1 killed with SIGKILL after the
    checkpoint of iteration 5: MPI ends the job well within a minute; the relaunch resumes from that
    checkpoint, and the two launches log the one-process losses."""
    import psutil
    env, flags = _sizes(data_prefix, tmp_path / "ckpt"), [*_flags(tmp_path), "--save-interval", str(FIRST_LAUNCH)]
    launch = subprocess.Popen(["bash", os.path.join(REPO, "scripts", "mpi_pretrain_gpt2.sh"), *flags], cwd=REPO,
                              env=script_environment(**env, NP="2"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    lines = []
    for line in launch.stdout:
        lines.append(line)
        if line.startswith(f"saved checkpoint at iteration {FIRST_LAUNCH} "):
            next(p for p in psutil.Process(launch.pid).children(recursive=True)
                 if p.environ().get("PMI_RANK") == "1" and p.name().startswith("python")).kill()
            break
    killed = time.monotonic()
    first = "".join(lines) + launch.communicate(timeout=120)[0]
    assert launch.returncode != 0 and time.monotonic() - killed < 60, first[-3000:]
    assert "> launcher: MPI (PMI: MPICH, Cray PALS, Intel MPI); world size 2, rank 0" in first, first[-3000:]
    second = run_script("mpi_pretrain_gpt2.sh", {**env, "NP": "2"}, *flags, timeout=300)
    assert second.returncode == 0, (second.stdout + second.stderr)[-4000:]
    assert f"loaded checkpoint {tmp_path / 'ckpt' / f'global_step{FIRST_LAUNCH}'}/" in second.stdout
    assert sorted(logged_losses(second.stdout)) == list(range(FIRST_LAUNCH + 1, ITERS + 1)), second.stdout[-3000:]
    assert {**logged_losses(first), **logged_losses(second.stdout)} == pytest.approx(one_process_losses, rel=1e-5)


def test_a_job_that_never_assembles_stops_with_one_line(tmp_path, data_prefix):
    """srun's variables for 2 tasks, and MPI's for a world of 2, in one process each: the other never comes."""
    command = [sys.executable, "pretrain_gpt2.py", *entry_argv(dry_run("pretrain_gpt2.sh", _sizes(
        data_prefix, tmp_path / "ckpt"), *_flags(tmp_path))), "--distributed-timeout-minutes", "0.05"]
    alone = {"Slurm": {"SLURM_JOB_ID": "7", "SLURM_PROCID": "0", "SLURM_NTASKS": "2", "SLURM_LOCALID": "0",
                       "SLURM_JOB_NODELIST": "localhost"},
             "MPI": {"PMI_RANK": "0", "PMI_SIZE": "2", "MPI_LOCALRANKID": "0", "MPI_LOCALNRANKS": "2",
                     "MASTER_PORT": str(free_port())}}
    started = time.monotonic()
    processes = {name: subprocess.Popen(command, cwd=REPO, env=script_environment(**env), stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True) for name, env in alone.items()}
    for process in processes.values():
        stdout, stderr = process.communicate(timeout=120)
        errors = [line for line in stderr.splitlines() if line.startswith("error:")]
        assert process.returncode == 2 and "Traceback" not in stderr and " iteration " not in stdout, stderr[-3000:]
        assert len(errors) == 1 and "rank 0 of 2" in errors[0] and "did not assemble" in errors[0] \
            and "--distributed-timeout-minutes 0.05" in errors[0] and "does not train alone" in errors[0], errors
    assert time.monotonic() - started < 3 + 60


def test_srun_ranks_log_one_process_losses_and_a_stopped_rank_ends_the_job(tmp_path, data_prefix,
                                                                          one_process_losses):
    """slurm_srun.sbatch's command as two srun tasks; rank 1 stopped with SIGSTOP after the checkpoint of
    iteration 5: rank 0 exits within the timeout (0.1 min) + 60 s with a line naming where it waited and
    rank 1; the relaunch resumes from that checkpoint; together they log the one-process losses and end
    with the weights of an unbroken 2-rank run."""
    timeout_minutes = 0.1
    env = {**_sizes(data_prefix, tmp_path / "ckpt"), "TIMEOUT_MINUTES": str(timeout_minutes)}
    flags = [*_flags(tmp_path), "--save-interval", str(FIRST_LAUNCH)]
    rank0, rank1 = _srun_processes(env, flags)
    lines = []
    for line in rank0.stdout:
        lines.append(line)
        if line.startswith(f"saved checkpoint at iteration {FIRST_LAUNCH} "):
            rank1.send_signal(signal.SIGSTOP)
            break
    stopped = time.monotonic()
    first = "".join(lines) + rank0.communicate(timeout=timeout_minutes * 60 + 60)[0]
    waited = time.monotonic() - stopped
    rank1.kill()
    rank1.communicate()
    assert "> launcher: Slurm; world size 2, rank 0 (local rank 0 of 2)" in first, first[-3000:]
    assert rank0.returncode == 1 and waited < timeout_minutes * 60 + 60, first[-3000:]
    (line,) = [line for line in first.splitlines() if line.startswith("rank 0: stalled at iteration")]
    assert "waiting in" in line and "ranks that did not arrive: 1 (silent" in line, line
    assert f"the last committed checkpoint is global_step{FIRST_LAUNCH} in {tmp_path / 'ckpt'}" in line, line
    tasks = _srun_processes(env, flags, job_id="4243")
    second = [task.communicate(timeout=300)[0] for task in tasks][0]
    assert all(task.returncode == 0 for task in tasks), second[-3000:]
    assert f"loaded checkpoint {tmp_path / 'ckpt' / f'global_step{FIRST_LAUNCH}'}/" in second, second[-3000:]
    assert sorted(logged_losses(second)) == list(range(FIRST_LAUNCH + 1, ITERS + 1)), second[-3000:]
    assert {**logged_losses(first), **logged_losses(second)} == pytest.approx(one_process_losses, rel=1e-5)
    words = dry_run("slurm_srun.sbatch", {**env, "CHECKPOINT_PATH": str(tmp_path / "unbroken"),
                                          "SLURM_JOB_NODELIST": "localhost", "SLURM_JOB_ID": "1",
                                          "SLURM_SUBMIT_DIR": REPO}, *flags)
    expected = unbroken_weights(2, entry_argv(words))
    assert same_weights(expected, read_checkpoint(str(tmp_path / "ckpt"))[0]), "final weights must be equal"

