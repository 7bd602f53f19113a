"""Distributed start-up and the random streams, shared by training, evaluation and generation.

Start-up never waits silently. On the CPU, deepspeed.init_distributed just-in-time builds (or, in a
new process, re-checks with ninja) DeepSpeed's shared-memory op under torch's extension folder,
behind a `lock` file that torch creates and removes; a process killed in that window leaves the
lock, and every later launch would wait on it forever. The extension folder is kept per Python
environment (TORCH_EXTENSIONS_DIR, unless set), and while start-up runs a watchdog clears a lock that
no living process holds (none works in its folder) and, after a minute, says what start-up waits for.
"""

import contextlib
import datetime
import glob
import os
import random
import re
import sys
import threading
import time

import deepspeed
import numpy as np
import torch
import torch.distributed as dist
from deepspeed.accelerator import get_accelerator

import launch_environment
import mpu

# Megatron's rule: each pipeline stage draws dropout from its own streams (seed + 100 x stage).
PIPELINE_SEED_STRIDE = 100
# Megatron-LM's default for --distributed-timeout-minutes
DEFAULT_TIMEOUT_MINUTES = 10


class UsageError(Exception):
    """A problem with the flags, config, data or checkpoint that the user must fix: printed as one line."""


def run_or_exit(run, args, errors=()):
    """run(args) for an entry script; a UsageError, ValueError, FileNotFoundError or one of `errors` is one
    'error:' line on stderr and exit status 2 (no traceback: the line says what to do)."""
    try:
        return run(args)
    except (UsageError, ValueError, FileNotFoundError, *errors) as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        sys.exit(2)


def print_rank_0(message):
    if not dist.is_initialized() or dist.get_rank() == 0:
        print(message, flush=True)


STALE_LOCK_S = 10  # holding the lock without building (ninja's check) takes about a second
REPORT_AFTER_S = 60


def extension_folder():
    """Where torch builds and finds JIT-compiled ops (DeepSpeed's): TORCH_EXTENSIONS_DIR, set to
    <virtual environment>/torch_extensions unless it is set (or outside a virtual environment).

    The build there runs the environment's own ninja (pip's) even when the environment is not activated
    (`.venv/bin/python ...` from a job script): torch runs the `ninja` it finds on PATH, and two ninja
    versions (pip's 1.13, a system's 1.11) hash the same build command differently, so runs with and
    without the environment on PATH rebuilt the op in turn (about 30 s each, measured here)."""
    in_virtual_environment = sys.prefix != sys.base_prefix
    if "TORCH_EXTENSIONS_DIR" not in os.environ and in_virtual_environment and os.access(sys.prefix, os.W_OK):
        os.environ["TORCH_EXTENSIONS_DIR"] = os.path.join(sys.prefix, "torch_extensions")
    scripts = os.path.dirname(sys.executable)
    if os.path.isfile(os.path.join(scripts, "ninja")) and os.environ.get("PATH", "").split(os.pathsep)[0] != scripts:
        os.environ["PATH"] = scripts + os.pathsep + os.environ.get("PATH", "")
    from torch.utils.cpp_extension import get_default_build_root
    return os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root()


def arch_list_for_deepspeed():
    """TORCH_CUDA_ARCH_LIST without architecture-specific suffixes ("9.0a" -> "9.0"): DeepSpeed 0.19's op
    builder reads each entry as integers and stops fused Adam's first build on Hopper images that set
    "9.0a". The generic target builds the same kernels for DeepSpeed's ops."""
    listed = os.environ.get("TORCH_CUDA_ARCH_LIST")
    if listed:
        os.environ["TORCH_CUDA_ARCH_LIST"] = re.sub(r"(\d+\.\d+)[a-z]+", r"\1", listed)
    return os.environ.get("TORCH_CUDA_ARCH_LIST")


def _folders_in_use():
    """The working folders of the processes on this machine (a build runs ninja and the compiler there)."""
    folders = set()
    for cwd in glob.glob("/proc/[0-9]*/cwd"):
        try:
            folders.add(os.path.realpath(cwd))
        except OSError:
            continue
    return folders


class _StartupWatchdog(threading.Thread):
    """Clears stale extension locks and reports a long wait (see the module docstring)."""

    def __init__(self, root):
        super().__init__(daemon=True)
        self.root, self.done, self.started = root, threading.Event(), time.time()

    def _locks(self):
        locks = []  # {root}/{op}/lock under TORCH_EXTENSIONS_DIR, {root}/{python and device}/{op}/lock by default
        for lock in glob.glob(os.path.join(self.root, "*", "lock")) + glob.glob(os.path.join(self.root, "*", "*", "lock")):
            with contextlib.suppress(FileNotFoundError):
                locks.append((lock, time.time() - os.path.getmtime(lock)))
        return locks

    def run(self):
        reported = False
        while not self.done.wait(2):
            locks = self._locks()
            stale = [(lock, age) for lock, age in locks if age > STALE_LOCK_S]
            in_use = _folders_in_use() if stale else set()
            for lock, age in stale:
                if os.path.realpath(os.path.dirname(lock)) not in in_use:
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(lock)
                        print(f"warning: removed {lock}, {age:.0f} s old and held by no living process (a process "
                              "killed while building or loading a DeepSpeed op leaves it; start-up would wait on it "
                              "forever)", file=sys.stderr, flush=True)
            waited = time.time() - self.started
            if waited > REPORT_AFTER_S and not reported:
                reported = True
                builds = sorted(f for f in _folders_in_use() if f.startswith(os.path.realpath(self.root) + os.sep))
                what = ", ".join(f"the lock {lock} ({age:.0f} s old)" for lock, age in locks) + "".join(
                    f" (a build of a DeepSpeed op runs in {folder}: a first build takes minutes)" for folder in builds)
                what = what or (f"the other ranks at {os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')} "
                                f"(world size {os.environ.get('WORLD_SIZE')}): check that every rank was launched and "
                                "can reach that address")
                print(f"rank {os.environ.get('RANK', '0')}: start-up has waited {waited:.0f} s for {what}",
                      file=sys.stderr, flush=True)


@contextlib.contextmanager
def startup_watchdog():
    arch_list_for_deepspeed()
    watchdog = _StartupWatchdog(extension_folder())
    watchdog.start()
    try:
        yield
    finally:
        watchdog.done.set()


def collective_timeout(args):
    """--distributed-timeout-minutes as a timedelta (Megatron-LM's flag; fractions of a minute allowed)."""
    given = args.distributed_timeout_minutes if hasattr(args, "distributed_timeout_minutes") else None  # benchmarks
    return datetime.timedelta(minutes=given or DEFAULT_TIMEOUT_MINUTES)


def _every_group_times_out_after(timeout):
    """torch gives a group created without a timeout its backend's default (gloo 30 minutes), whatever the
    world's; mpu's groups, the stop-signal group and DeepSpeed's pipeline and expert groups are created
    that way, so the default itself is set (torch keeps it in distributed_c10d's module globals)."""
    from torch.distributed import distributed_c10d
    distributed_c10d.default_pg_timeout = timeout
    if isinstance(getattr(distributed_c10d, "default_pg_nccl_timeout", None), datetime.timedelta):
        distributed_c10d.default_pg_nccl_timeout = timeout


def _rendezvous_failed(launch, timeout, error):
    minutes = timeout.total_seconds() / 60
    return UsageError(
        f"rank {launch.rank} of {launch.world_size} ({launch.launcher}): the job did not assemble at "
        f"{launch.master_addr}:{launch.master_port} within --distributed-timeout-minutes {minutes:g} ({error}). "
        "Every rank must be started (srun or mpiexec starts them; a batch script run as one `python` is one process "
        "of an allocation of several tasks) and reach that address; this process does not train alone")


def initialize_distributed(args):
    """torch.distributed through DeepSpeed, then the model-parallel groups, under the start-up watchdog.

    The rank, world size and master come from the launcher that started the process
    (launch_environment.discover: torchrun, deepspeed, Slurm, MPI, or one process), written into the
    variables torch reads, so DeepSpeed never goes looking for mpi4py. Rank 0 prints them in one line.
    A job whose ranks do not all arrive within --distributed-timeout-minutes stops with one line.
    """
    try:
        launch = launch_environment.export(launch_environment.discover())
    except launch_environment.LaunchError as error:
        raise UsageError(str(error)) from None
    args.local_rank = launch.local_rank
    accelerator = get_accelerator()
    if accelerator.device_name() != "cpu":
        accelerator.set_device(args.local_rank)
    if accelerator.device_name() == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // launch.local_world_size))
    timeout = collective_timeout(args)
    _every_group_times_out_after(timeout)
    with startup_watchdog():
        try:
            deepspeed.init_distributed(dist_backend=args.distributed_backend or accelerator.communication_backend_name(),
                                       timeout=timeout, auto_mpi_discovery=False)
        except (RuntimeError, TimeoutError) as error:  # torch's DistStoreError is a RuntimeError
            raise _rendezvous_failed(launch, timeout, str(error).splitlines()[0]) from None
        print_rank_0(f"> {launch.describe()}")
        try:
            mpu.initialize_model_parallel(args.model_parallel_size, args.pipe_parallel_size)
        except ValueError as error:
            raise UsageError(str(error)) from None


def dropout_seed(seed):
    """The seed of this rank's dropout streams: `seed` offset by the pipeline stage, so stages do not
    draw identical masks (the tensor-parallel stream adds the tensor rank on top, in mpu). Weights do
    not depend on it: models build each part under seed + part index (model.transformer.seeded)."""
    return seed + PIPELINE_SEED_STRIDE * mpu.get_pipeline_model_parallel_rank()


def set_random_seed(seed):
    """Seed python, numpy, torch and the model-parallel tracker for this rank (see dropout_seed)."""
    seed = dropout_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    mpu.model_parallel_cuda_manual_seed(seed)


def rng_state():
    """Every random stream of this rank, to save with a checkpoint: tensors and plain values only, so it
    loads with torch.load(weights_only=True)."""
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    return {"python": random.getstate(), "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss,
                                                   cached_gaussian),
            "torch": torch.get_rng_state(), "device": get_accelerator().get_rng_state(),
            "tracker": mpu.get_cuda_rng_tracker().get_states()}


def set_rng_state(state):
    random.setstate(state["python"])
    kind, keys, position, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached_gaussian))
    torch.set_rng_state(state["torch"])
    get_accelerator().set_rng_state(state["device"])
    mpu.get_cuda_rng_tracker().set_states(state["tracker"])
