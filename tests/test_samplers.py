"""DistributedBatchSampler: ranks split each global batch; a resumed sampler continues exactly."""

import pytest

from data_utils.samplers import DistributedBatchSampler


def test_ranks_partition_each_global_batch():
    samplers = [DistributedBatchSampler(100, 4, rank, 3) for rank in range(3)]
    per_rank = [list(s) for s in samplers]
    assert all(len(batches) == len(s) == 8 for batches, s in zip(per_rank, samplers))  # 100 // 12
    for step in range(8):
        together = sorted(i for batches in per_rank for i in batches[step])
        assert together == list(range(step * 12, step * 12 + 12))
    assert per_rank[1][0] == [4, 5, 6, 7]


@pytest.mark.parametrize("k", [0, 1, 5, 8])
def test_resumed_at_step_k_yields_what_an_unbroken_sampler_yields_from_k(k):
    for rank in range(2):
        unbroken = list(DistributedBatchSampler(103, 5, rank, 2))
        resumed = list(DistributedBatchSampler(103, 5, rank, 2, consumed_samples=k * 10))
        assert resumed == unbroken[k:]


def test_resumed_on_another_layout_reads_the_next_samples():
    """30 samples consumed in global batches of 10; then 4 ranks of micro batch 5 read from sample 30."""
    resumed = [list(DistributedBatchSampler(103, 5, rank, 4, consumed_samples=30)) for rank in range(4)]
    assert [batches[0] for batches in resumed] == [list(range(30 + 5 * r, 35 + 5 * r)) for r in range(4)]
    assert all(len(batches) == 3 for batches in resumed)  # (103 - 30) // 20


def test_last_partial_batch():
    kept = [list(DistributedBatchSampler(10, 2, rank, 2, drop_last=False)) for rank in range(2)]
    assert kept[0][-1] == [8] and kept[1][-1] == [9]
    with pytest.raises(ValueError, match="rank 2 of 2"):
        DistributedBatchSampler(10, 2, 2, 2)
