"""The model-parallel RNG tracker and activation checkpointing that replays it (mpu's and DeepSpeed's)."""

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

import mpu
from distributed import run_distributed

SEED, IN, HIDDEN = 1234, 8, 16


def _gather(obj):
    everyone = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, obj)
    return everyone


def _mask(p=0.5, n=256):
    return F.dropout(torch.ones(n), p).ne(0)


def _tracker_body():
    """TP=2 x DP=2: tracked masks differ across tensor ranks and agree across data ranks."""
    mpu.initialize_model_parallel(2)
    mpu.model_parallel_cuda_manual_seed(SEED)
    tracker = mpu.get_cuda_rng_tracker()
    saved = tracker.get_states()
    with tracker.fork():
        tracked = _mask()
    default = _mask()
    everyone = _gather((mpu.get_model_parallel_rank(), tracked, default))
    for tp_rank, other_tracked, other_default in everyone:
        assert torch.equal(other_default, default), "default-generator masks must agree on all ranks"
        same_tp_rank = tp_rank == mpu.get_model_parallel_rank()
        assert torch.equal(other_tracked, tracked) == same_tp_rank, "tracked masks: per tensor rank"

    with tracker.fork():
        following = _mask()
    assert not torch.equal(following, tracked), "a fork must advance the tracked state"
    tracker.set_states(saved)
    with tracker.fork():
        replayed = _mask()
    assert torch.equal(replayed, tracked), "restored states must replay the same mask"


def test_tracker_masks():
    run_distributed(4, _tracker_body)


class _Block(torch.nn.Module):
    """Column -> dropout on the partitioned activation (tracked RNG) -> Row -> dropout (default RNG)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(SEED)
        self.column = mpu.ColumnParallelLinear(IN, HIDDEN, gather_output=False)
        self.row = mpu.RowParallelLinear(HIDDEN, IN, input_is_parallel=True)

    def forward(self, x):
        hidden = F.gelu(self.column(x))
        with mpu.get_cuda_rng_tracker().fork():
            hidden = F.dropout(hidden, 0.3)
        return F.dropout(self.row(hidden), 0.3)


def _run(block, x, use_checkpoint):
    block.zero_grad()
    x = x.clone().requires_grad_()
    out = mpu.checkpoint(block, x) if use_checkpoint else block(x)
    out.pow(2).sum().backward()
    return out.detach(), x.grad, [p.grad.clone() for p in block.parameters()], _mask()


def _checkpoint_body(implementation, partition_activations):
    mpu.initialize_model_parallel(2)
    if implementation == "deepspeed":
        import deepspeed
        deepspeed.checkpointing.configure(mpu, partition_activations=partition_activations)
        mpu.set_checkpointing_implementation(deepspeed.checkpointing)
    mpu.model_parallel_cuda_manual_seed(SEED)
    block = _Block()
    x = torch.randn(4, 3, IN, generator=torch.Generator().manual_seed(5))
    start = (torch.get_rng_state(), mpu.get_cuda_rng_tracker().get_states())
    plain = _run(block, x, use_checkpoint=False)
    torch.set_rng_state(start[0])
    mpu.get_cuda_rng_tracker().set_states(start[1])
    checkpointed = _run(block, x, use_checkpoint=True)
    out, x_grad, grads, next_mask = checkpointed
    assert torch.equal(out, plain[0]), "checkpointed forward differs"
    assert torch.equal(x_grad, plain[1]), "input gradient differs after recomputation"
    for got, expected in zip(grads, plain[2]):
        assert torch.equal(got, expected), "weight gradient differs after recomputation"
    assert torch.equal(next_mask, plain[3]), "checkpointing must leave the RNG where the plain run left it"


@pytest.mark.parametrize("implementation,partition_activations",
                         [("mpu", False), ("deepspeed", False), ("deepspeed", True)])
def test_checkpoint_reproduces_forward_and_gradients(implementation, partition_activations):
    run_distributed(2, _checkpoint_body, implementation, partition_activations)
