"""No silent hang: a rank stuck in one place ends the job with a line saying where, and who is missing.

The training loop marks the part of the step each rank is in (`mark("backward")`). While it trains, a
thread of each rank publishes that place and a beat that advances every second to the rendezvous store
(a client of MASTER_ADDR:MASTER_PORT, the store torch's rendezvous runs). When this rank stays in one
part longer than --distributed-timeout-minutes (its collectives time out after the same time, set in
initialize), it prints one line: the part and the collective it waits in, the ranks that have not
arrived (silent: their beat stopped, a process stopped or a node gone; behind: alive at an earlier
part), the last committed checkpoint; and ends the process (os._exit: a thread blocked inside a
collective cannot be unwound), so the launcher ends the job and the next launch resumes from that
checkpoint. A collective that raises first (gloo's timeout, a peer's closed connection) ends in the
same line through `fail`.
"""

import contextlib
import datetime
import os
import sys
import threading
import time

import torch.distributed as dist

# Each part of a step, in order, and the communication it waits in.
PARTS = {
    "batch": "the batch read and its broadcast to the tensor-parallel ranks",
    "forward+loss": "the forward's tensor-parallel all-reduces",
    "backward": "the gradient all-reduce (reduce-scatter under ZeRO-2/3) over the data-parallel ranks",
    "optimizer": "the optimizer step's gradient-norm all-reduce and ZeRO's parameter all-gather",
    "pipeline": "the pipeline's sends and receives between stages",
    "log": "the log line's all-gather of the window's values",
    "evaluation": "the evaluation's collectives",
    "stop agreement": "the all-reduce that agrees on a stop signal",
    "checkpoint": "the checkpoint save's barriers",
}
BEAT_S = 1.0
STORE_TIMEOUT_S = 5.0
COLLECTIVE_FAILURES = ("Timed out", "timed out", "Connection closed by peer", "Connection reset by peer",
                       "NCCL communicator was aborted", "Watchdog caught collective operation timeout")

_active = None


def mark(part, iteration=None):
    """Note that this rank entered `part` (of iteration, or the current one); nothing when no watch runs."""
    if _active is not None:
        _active.enter(part, iteration)


def is_collective_failure(error):
    return isinstance(error, RuntimeError) and any(text in str(error) for text in COLLECTIVE_FAILURES)


def _store_client():
    """A client of the rendezvous store (rank 0's, or torchrun's agent's); None when it cannot be reached."""
    try:
        return dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                             timeout=datetime.timedelta(seconds=STORE_TIMEOUT_S))
    except (RuntimeError, KeyError, ValueError):
        return None


class StallWatch(threading.Thread):
    def __init__(self, timeout, describe_checkpoint):
        super().__init__(daemon=True, name="stall-watch")
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.timeout_s = timeout.total_seconds()
        self.describe_checkpoint = describe_checkpoint
        self.position = (0, "batch", time.monotonic())
        self.beat, self.done, self.reported = 0, threading.Event(), threading.Lock()
        self.store = _store_client()

    def enter(self, part, iteration=None):
        self.position = (self.position[0] if iteration is None else iteration, part, time.monotonic())

    def _key(self, rank):
        return f"stall-watch/{rank}"

    def run(self):
        while True:
            iteration, part, since = self.position
            self.beat += 1
            with contextlib.suppress(Exception):  # a store that does not answer: the report says so
                self.store.set(self._key(self.rank), f"{self.beat} {iteration} {part}")  # (None: AttributeError)
            waited = time.monotonic() - since
            if waited > self.timeout_s:
                self.fail(f"no progress for {waited:.0f} s")
            if self.done.wait(BEAT_S):
                return

    def _seen(self, store):
        """{rank: (beat, iteration, part)} of every rank that has published (this one included)."""
        seen = {}
        for rank in range(self.world_size):
            if store.check([self._key(rank)]):
                beat, iteration, part = store.get(self._key(rank)).decode().split(" ", 2)
                seen[rank] = (int(beat), int(iteration), part)
        return seen

    def missing_ranks(self):
        """Which ranks had not arrived: silent ones (no beat in 1.5 s) and ones alive at an earlier place."""
        iteration, part, _ = self.position
        here = (iteration, list(PARTS).index(part))
        try:  # a connection of its own: the publishing thread may be blocked on the other
            store = _store_client()
            first = self._seen(store)
            time.sleep(1.5 * BEAT_S)
            second = self._seen(store)
        except Exception:  # noqa: BLE001 (any failure of the store means the same here)
            return ("unknown (the rendezvous store at rank 0's host does not answer: rank 0 itself may be the one "
                    "that stalled)")
        missing = []
        for rank in range(self.world_size):
            if rank == self.rank:
                continue
            if rank not in second:
                missing.append(f"{rank} (never reported)")
            elif second[rank][0] == first.get(rank, (None,))[0]:
                missing.append(f"{rank} (silent: no sign of life; last reported at iteration {second[rank][1]}, "
                               f"{second[rank][2]})")
            elif (second[rank][1], list(PARTS).index(second[rank][2])) < here:
                missing.append(f"{rank} (alive but behind: at iteration {second[rank][1]}, {second[rank][2]})")
        return ", ".join(missing) or "none seen (every rank is alive and as far as this one)"

    def fail(self, cause):
        """Print where this rank waited and who is missing, then end the process (exit status 1)."""
        if not self.reported.acquire(blocking=False):
            return
        iteration, part, _ = self.position
        message = (f"rank {self.rank}: stalled at iteration {iteration} in {part}, waiting in {PARTS[part]} "
                   f"({cause}; --distributed-timeout-minutes {self.timeout_s / 60:g}); ranks that did not "
                   f"arrive: {self.missing_ranks()}; stopping the job: {self.describe_checkpoint()}")
        print(message, file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(1)


@contextlib.contextmanager
def watching(timeout, describe_checkpoint):
    """A StallWatch over the body on a job of several ranks (one process has no one to wait for)."""
    global _active
    if dist.get_world_size() == 1:
        yield
        return
    _active = StallWatch(timeout, describe_checkpoint)
    _active.start()
    try:
        yield
    except RuntimeError as error:
        if is_collective_failure(error):
            _active.fail(str(error).splitlines()[0][:300])
        raise
    finally:  # the thread ends before the process may: a daemon thread inside the store's C++ at exit aborts it
        _active.done.set()
        _active.join(timeout=STORE_TIMEOUT_S + BEAT_S)
        _active = None
