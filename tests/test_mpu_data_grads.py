"""broadcast_data from each tensor-parallel source, and clip_grad_norm against the unpartitioned model."""

import math

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn import init

import mpu
from distributed import assert_rel_close, run_distributed


def _batch_of(group_index):
    generator = torch.Generator().manual_seed(100 + group_index)
    return {"text": torch.randint(0, 50000, (3, 9), generator=generator),
            "types": torch.randint(0, 2, (3, 9), generator=generator),
            "label": torch.randint(0, 2, (3,), generator=generator)}


def _broadcast_body(tensor_parallel):
    mpu.initialize_model_parallel(tensor_parallel)
    group_index = mpu.get_model_parallel_src_rank() // tensor_parallel
    data = _batch_of(group_index) if mpu.get_model_parallel_rank() == 0 else None
    received = mpu.broadcast_data(["text", "types", "label"], data, torch.int64)
    expected = _batch_of(group_index)
    for key, tensor in expected.items():
        assert torch.equal(received[key], tensor), key
    bad = {"text": torch.zeros(2, 2, dtype=torch.int32)} if mpu.get_model_parallel_rank() == 0 else None
    if tensor_parallel == 1:
        with pytest.raises(TypeError, match=r"data\['text'\] has dtype torch.int32, expected torch.int64"):
            mpu.broadcast_data(["text"], bad, torch.int64)


@pytest.mark.parametrize("world_size,tensor_parallel", [(1, 1), (4, 2), (4, 4)])
def test_broadcast_data(world_size, tensor_parallel):
    run_distributed(world_size, _broadcast_body, tensor_parallel)


IN, HIDDEN = 8, 16


def _masters():
    weights = []
    for seed, shape in ((41, (HIDDEN, IN)), (42, (IN, HIDDEN))):
        torch.manual_seed(seed)
        weight = torch.empty(shape)
        init.xavier_normal_(weight)
        weights.append(weight.requires_grad_())
    return weights


def _clip_body(tensor_parallel, norm_type, max_norm):
    """An MLP with partitioned weights and a replicated bias and gain (counted once)."""
    mpu.initialize_model_parallel(tensor_parallel)
    rank, world = mpu.get_model_parallel_rank(), mpu.get_model_parallel_world_size()
    torch.manual_seed(41)
    column = mpu.ColumnParallelLinear(IN, HIDDEN, gather_output=False, bias=False)
    torch.manual_seed(42)
    row = mpu.RowParallelLinear(HIDDEN, IN, input_is_parallel=True)
    gain = torch.nn.Parameter(torch.linspace(0.5, 1.5, IN))
    x = torch.randn(5, IN, generator=torch.Generator().manual_seed(43))

    first, second = _masters()
    bias_ref, gain_ref = torch.zeros(IN, requires_grad=True), torch.linspace(0.5, 1.5, IN).requires_grad_()
    (F.linear(F.gelu(F.linear(x, first)), second, bias_ref) * gain_ref).pow(2).sum().backward()
    reference = [first, second, bias_ref, gain_ref]
    expected_norm = torch.nn.utils.clip_grad_norm_(reference, max_norm, norm_type).item()
    assert expected_norm > max_norm, "the test must exercise the scaling"

    (row(F.gelu(column(x))) * gain).pow(2).sum().backward()
    parameters = [column.weight, row.weight, row.bias, gain]
    total = mpu.clip_grad_norm(parameters, max_norm, norm_type)
    assert abs(total - expected_norm) <= 1e-5 * expected_norm, f"norm {total} != {expected_norm}"
    assert_rel_close(column.weight.grad, torch.chunk(first.grad, world, 0)[rank], what="clipped column grad")
    assert_rel_close(row.weight.grad, torch.chunk(second.grad, world, 1)[rank], what="clipped row grad")
    assert_rel_close(row.bias.grad, bias_ref.grad, what="clipped bias grad")
    assert_rel_close(gain.grad, gain_ref.grad, what="clipped gain grad")
    norms = [None] * dist.get_world_size()
    dist.all_gather_object(norms, total)
    assert len(set(norms)) == 1, f"ranks disagree on the norm: {norms}"


@pytest.mark.parametrize("world_size,norm_type", [(1, 2), (2, 2), (4, 2), (2, math.inf)])
def test_clip_grad_norm_matches_unpartitioned(world_size, norm_type):
    run_distributed(world_size, _clip_body, world_size, norm_type, 0.5)
