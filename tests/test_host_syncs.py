"""The training loop leaves its values on the device: on a GPU every read of a tensor on the host
(.item(), .tolist(), .cpu(), float(), bool()) waits for the device. Reads made by this project's code
are counted through a TorchFunctionMode over whole runs that differ only in their micro-batches per
iteration or their log interval: none per micro-batch, one per iteration (the SIGTERM flag, a CPU
tensor agreed over a gloo group: no device to wait for), a few per log line (one reduction of the
window's values, the grad norm). DeepSpeed's and torch's own reads (ZeRO's check of the norm, torch
AdamW's CPU step count) are theirs."""

import collections
import os
import sys

import torch
from torch.overrides import TorchFunctionMode

from distributed import run_distributed
from gpt2_runs import train_argv

READS = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.cpu, torch.Tensor.numpy, torch.Tensor.__bool__,
         torch.Tensor.__float__, torch.Tensor.__int__, torch.Tensor.__index__}


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OURS = [os.path.join(REPO, name) for name in os.listdir(REPO) if name.endswith(".py") or name in (
    "mpu", "model", "data_utils", "checkpointing")]


class _CountReads(TorchFunctionMode):
    """Reads of tensors on the host called from this project's code (not DeepSpeed's, torch's, tests')."""

    def __init__(self):
        super().__init__()
        self.reads = collections.Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in READS:
            caller = sys._getframe(1).f_code.co_filename
            if caller.startswith(tuple(OURS)):
                self.reads[f"{os.path.relpath(caller, REPO)} {func.__name__}"] += 1
        return func(*args, **(kwargs or {}))


def _reads(argv):
    import mpu
    import pretrain_gpt2
    mpu.destroy_model_parallel()  # one process runs several jobs here
    with _CountReads() as counting:
        pretrain_gpt2.main(argv)
    return counting.reads


def _runs(data_prefix):
    def argv(iterations, accumulation, log_interval, *extra):
        return train_argv(data_prefix, "--train-iters", str(iterations), "--gradient-accumulation-steps",
                          str(accumulation), "--log-interval", str(log_interval), "--zero-stage", "2", *extra,
                          batch_size=2)
    return {"4 iterations x 1 micro-batch, log every 2": _reads(argv(4, 1, 2)),
            "4 iterations x 3 micro-batches, log every 2": _reads(argv(4, 3, 2)),
            "8 iterations x 1 micro-batch, log every 4": _reads(argv(8, 1, 4)),
            "8 iterations x 1 micro-batch, log every 2": _reads(argv(8, 1, 2))}


def test_no_host_reads_per_micro_batch_and_one_reduction_per_log_line(data_prefix):
    reads = run_distributed(1, _runs, data_prefix)[0]
    base, accumulated, longer, more_lines = (sum(counted.values()) for counted in reads.values())
    assert accumulated == base, reads  # 8 more micro-batches: not one more read
    per_iteration = (longer - base) / 4  # the same number of log lines, 4 more iterations
    assert per_iteration <= 1, reads
    per_log_line = (more_lines - longer) / 2  # 2 more log lines
    assert 0 < per_log_line <= 4, reads
