"""Work on a stream of items in worker processes, results in the stream's order (preprocessing, cleaning)."""

import collections
import itertools


def in_order(pool, workers, run_batch, items, batch_items=256):
    """run_batch over batches of the items, its results one by one in order; without a pool, in this
    process. Batches go to the workers from this thread, at most a few per worker in flight (Pool.imap
    read the input in a thread of its own, and terminating the pool while that thread fed it deadlocked
    now and then: a run stopped by a bad line never ended). Stopping early leaves only those few
    batches for pool.close() and join() to finish."""
    items = iter(items)
    if pool is None:
        while batch := list(itertools.islice(items, batch_items)):
            yield from run_batch(batch)
        return
    pending, in_flight = collections.deque(), 4 * workers
    while True:
        batch = list(itertools.islice(items, batch_items))
        if batch:
            pending.append(pool.apply_async(run_batch, (batch,)))
        if pending and (len(pending) >= in_flight or not batch):
            yield from pending.popleft().get()
        elif not batch:
            return
