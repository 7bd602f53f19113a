"""How batches reach a training or evaluation step: data loaders per data-parallel rank, the broadcast
to tensor-parallel ranks, and the loss normalisation that makes the loss a mean over every
loss-bearing token of the global batch.

An entry script's `get_batch(data_iterator, args)` returns (batch, its number of loss-bearing tokens)
on every tensor-parallel rank. Before a step, all micro-batches of the iteration are read, their
loss-bearing tokens counted over the data-parallel ranks, and each micro-batch's forward step gets
`loss_tokens`: the global batch's loss-bearing tokens per micro-batch. A micro-batch's loss is its
summed token losses / loss_tokens; DeepSpeed divides by the accumulation steps and averages over the
data-parallel ranks, so the gradient is that of the mean over all the global batch's loss-bearing
tokens (Megatron-Core's per-token loss), whatever the data-parallel size or accumulation, and however
the tokens are spread over micro-batches (masked positions, short or padded samples, --eod-mask-loss).
"""

import signal
import time

import torch
import torch.distributed as dist
from deepspeed.accelerator import get_accelerator

import mpu
from data_utils.samplers import DistributedBatchSampler


def broadcast_batch(data_iterator, keys, datatype=torch.int64):
    """The next batch, read on tensor-parallel rank 0 and sent to the other ranks of its group."""
    data = next(data_iterator) if mpu.get_model_parallel_rank() == 0 else None
    return mpu.broadcast_data(keys, data, datatype)


def _leave_stop_signals_to_the_rank(worker_id):
    """Schedulers signal every process of a job (Slurm's scancel and time limit, PBS's qdel, Ctrl-C to the
    foreground group, a launcher ending its ranks' process trees): a loader worker ended by SIGTERM or SIGINT
    takes its rank down ("DataLoader worker is killed by signal") before the rank can save. Workers ignore
    both; the rank saves, exits and ends them."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class TimedReads:
    """An iterator that sums the seconds its next() took: how long this rank waited for its own data (the
    loader, its workers, the filesystem), before any collective; the log line names the slowest rank."""

    def __init__(self, iterator):
        self.iterator, self.seconds = iterator, 0.0

    def __iter__(self):
        return self

    def __next__(self):
        started = time.perf_counter()
        try:
            return next(self.iterator)
        finally:
            self.seconds += time.perf_counter() - started


def data_wait(iterator):
    """Seconds a batches() iterator has waited for data so far (0 on ranks that receive their batches)."""
    return iterator.seconds if isinstance(iterator, TimedReads) else 0.0


def data_loader(dataset, args, consumed_samples=0):
    """Batches for this data-parallel rank, only on tensor-parallel rank 0 (the others receive them, so
    whether to run a step must be decided from the dataset, which every rank has, not from this)."""
    if dataset is None or mpu.get_model_parallel_rank() != 0:
        return None
    sampler = DistributedBatchSampler(len(dataset), args.batch_size, mpu.get_data_parallel_rank(),
                                      mpu.get_data_parallel_world_size(), consumed_samples=consumed_samples)
    # A loader's iterator draws its workers' base seed from `generator`; from torch's default generator
    # it would shift the dropout stream of tensor-parallel rank 0 only, and of a resumed run only.
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=args.num_workers,
                                         persistent_workers=args.num_workers > 0,
                                         worker_init_fn=_leave_stop_signals_to_the_rank,
                                         pin_memory=get_accelerator().device_name() != "cpu",  # async copies
                                         generator=torch.Generator().manual_seed(args.seed))
    return TimedReads(iter(loader))


def loss_tokens_per_micro_batch(counts):
    """The loss-bearing tokens of the global batch per micro-batch: `counts` (of this rank's
    micro-batches) summed over them and over the data-parallel ranks, divided by the number of
    micro-batches. One when there are none (every loss is then zero)."""
    device = get_accelerator().current_device_name()
    total = torch.stack([torch.as_tensor(c, dtype=torch.float64, device=device).reshape(()) for c in counts]).sum()
    dist.all_reduce(total, group=mpu.get_data_parallel_group())
    per_micro_batch = total / (len(counts) * mpu.get_data_parallel_world_size())
    return torch.where(total > 0, per_micro_batch, torch.ones_like(per_micro_batch)).float()


def micro_batches(get_batch, data_iterator, args, count):
    """[(batch, loss_tokens)] of the next `count` micro-batches (see the module's docstring)."""
    batches = [get_batch(data_iterator, args) for _ in range(count)]
    loss_tokens = loss_tokens_per_micro_batch([tokens for _, tokens in batches])
    return [(batch, loss_tokens) for batch, _ in batches]


def _pipeline_batches(get_batch, data_iterator, args):
    """(inputs, (*labels, loss_tokens)) micro-batches for the pipeline engine, which computes the
    loss from labels on its last stage; a batch begins with (inputs, labels); an iteration's
    micro-batches are read at once."""
    while True:
        for (inputs, labels, *_), loss_tokens in micro_batches(get_batch, data_iterator, args,
                                                           args.gradient_accumulation_steps):
            yield inputs, (*labels, loss_tokens)


def batches(dataset, args, get_batch, consumed_samples=0):
    """What a step reads from: this rank's data loader (see data_loader), or with pipeline stages the
    micro-batches for the pipeline engine, which reads them on its first and last stages."""
    loader = data_loader(dataset, args, consumed_samples)
    return _pipeline_batches(get_batch, loader, args) if args.pipe_parallel_size > 1 else loader
