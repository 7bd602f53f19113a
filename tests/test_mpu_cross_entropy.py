"""vocab_parallel_cross_entropy against torch's cross_entropy on the gathered logits, with and
without padded vocabulary columns (which must take no probability and get no gradient)."""

import pytest
import torch
import torch.nn.functional as F

import mpu
from distributed import assert_rel_close, run_distributed

BATCH, SEQ, VOCAB = 4, 6, 48


def _cross_entropy_body(tensor_parallel, offset, vocab_size):
    mpu.initialize_model_parallel(tensor_parallel)
    generator = torch.Generator().manual_seed(21)
    logits = torch.randn(BATCH, SEQ, VOCAB, generator=generator) * 8 + offset
    logits[..., vocab_size:] += 50.0  # padded columns with the largest logits: they must still take nothing
    target = torch.randint(0, vocab_size, (BATCH, SEQ), generator=generator)
    weights = torch.rand(BATCH, SEQ, generator=generator)

    reference_logits = logits.clone().requires_grad_()
    reference = F.cross_entropy(reference_logits[..., :vocab_size].reshape(-1, vocab_size), target.view(-1),
                                reduction="none").view(BATCH, SEQ)
    (reference * weights).sum().backward()

    rank, world = mpu.get_model_parallel_rank(), mpu.get_model_parallel_world_size()
    shard = torch.chunk(logits, world, dim=-1)[rank].clone().requires_grad_()
    before = shard.detach().clone()
    loss = mpu.vocab_parallel_cross_entropy(shard, target, None if vocab_size == VOCAB else vocab_size)
    (loss * weights).sum().backward()
    assert torch.equal(shard.detach(), before), "the logits are not changed in place"
    assert_rel_close(loss, reference, what="loss")
    assert_rel_close(shard.grad, torch.chunk(reference_logits.grad, world, dim=-1)[rank], what="logits grad")
    assert torch.isfinite(loss).all()


@pytest.mark.parametrize("world_size", [1, 2, 4])
def test_matches_torch_cross_entropy(world_size):
    """Offset 1e4 would overflow exp() without the max subtraction across the group."""
    run_distributed(world_size, _cross_entropy_body, world_size, 1.0e4, VOCAB)


@pytest.mark.parametrize("world_size", [1, 2, 4])
def test_padded_columns_take_no_probability(world_size):
    """30 real columns of 48: at 4 ranks (12 each) rank 2 holds some padding and rank 3 only padding."""
    run_distributed(world_size, _cross_entropy_body, world_size, 0.0, 30)
