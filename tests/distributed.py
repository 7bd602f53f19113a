"""Run a test body on N ranks over gloo on 127.0.0.1, one torch thread per rank.

Ranks live in a pool per world size, started once per test session (starting a rank costs seconds:
it imports torch and DeepSpeed), and each `run_distributed` call hands them one function. After a
body, model-parallel groups and the checkpointing implementation are reset; a body that fails on any
rank fails the caller with every failing rank's traceback, and its pool is replaced.
"""

import atexit
import datetime
import os
import queue
import time
import traceback

import torch
import torch.multiprocessing as mp

from launch_environment import free_port

TASK_TIMEOUT_S = 600
COLLECTIVE_TIMEOUT_S = 90


def _worker(rank, world_size, port, tasks, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_WORLD_SIZE=str(world_size))
    torch.set_num_threads(1)
    import deepspeed

    import mpu
    deepspeed.init_distributed(dist_backend="gloo", verbose=False,
                               timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S))
    while (task := tasks.get()) is not None:
        fn, args = task
        try:
            results.put((rank, None, fn(*args)))
        except BaseException:
            results.put((rank, traceback.format_exc(), None))
        finally:
            mpu.destroy_model_parallel()
            mpu.set_checkpointing_implementation(None)


class _Pool:
    def __init__(self, world_size, environment=None):
        context = mp.get_context("spawn")
        self.world_size = world_size
        self.tasks = [context.Queue() for _ in range(world_size)]
        self.results = context.Queue()
        port = free_port()
        self.processes = [context.Process(target=_worker, args=(rank, world_size, port, self.tasks[rank], self.results),
                                          daemon=False) for rank in range(world_size)]
        saved = dict(os.environ)
        os.environ.update(environment or {})  # a spawned rank starts with this process's environment
        try:
            for process in self.processes:
                process.start()
        finally:
            os.environ.clear()
            os.environ.update(saved)

    def run(self, fn, args):
        for task_queue in self.tasks:
            task_queue.put((fn, args))
        failures, values = [], [None] * self.world_size
        for _ in range(self.world_size):
            try:
                rank, error, value = self.results.get(timeout=TASK_TIMEOUT_S)
            except queue.Empty:
                failures.append(f"no answer within {TASK_TIMEOUT_S} s")
                break
            if error is not None:
                failures.append(f"rank {rank}:\n{error}")
            values[rank] = value
        return failures, values

    def close(self, grace_s=10):
        for task_queue, process in zip(self.tasks, self.processes):
            if process.is_alive():
                task_queue.put(None)
        deadline = time.monotonic() + grace_s  # one grace period for the whole pool, then kill the stragglers
        for process in self.processes:
            process.join(timeout=max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()


_POOLS = {}


def run_distributed(world_size, fn, *args):
    """Call fn(*args) on every rank of a `world_size`-rank gloo world; return what each rank returned.

    `fn` must be a module-level function (it is pickled to the ranks), and so must what it returns.
    """
    pool = _POOLS.get(world_size) or _POOLS.setdefault(world_size, _Pool(world_size))
    try:
        failures, values = pool.run(fn, args)
    except BaseException:  # the test's time limit (pytest-timeout) or ^C: its ranks may be stuck in the body
        _POOLS.pop(world_size).close(grace_s=0)
        raise
    if failures:
        _POOLS.pop(world_size).close()
    return _values_or_failure(fn, world_size, failures, values)


def run_distributed_fresh(world_size, fn, *args, environment=None):
    """run_distributed on ranks started for this call alone (with `environment` added to theirs), for what
    a process's lifetime measures (its peak resident memory) or what must be set before it starts."""
    pool = _Pool(world_size, environment)
    try:
        failures, values = pool.run(fn, args)
    except BaseException:
        pool.close(grace_s=0)
        raise
    pool.close()
    return _values_or_failure(fn, world_size, failures, values)


def _values_or_failure(fn, world_size, failures, values):
    if failures:
        raise AssertionError(f"{fn.__name__} failed on {world_size} ranks:\n" + "\n".join(failures))
    return values


@atexit.register
def _close_pools():
    for pool in _POOLS.values():
        pool.close()


def assert_rel_close(actual, expected, rtol=1e-5, what="tensor"):
    """||actual - expected|| <= rtol * ||expected|| (norm-wise relative error, in float64)."""
    actual, expected = actual.detach().double(), expected.detach().double()
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    error = (actual - expected).norm().item()
    scale = expected.norm().item()
    assert error <= rtol * scale, f"{what}: relative error {error / max(scale, 1e-300):.3e} > {rtol:.0e}"
