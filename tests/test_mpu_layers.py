"""Each tensor-parallel layer against the unpartitioned computation with the same master weight."""

import pytest
import torch
import torch.nn.functional as F
from torch.nn import init

import mpu
from distributed import assert_rel_close, run_distributed

BATCH, SEQ, IN, OUT, VOCAB = 3, 5, 16, 24, 40


def _master(shape, seed, init_method=init.xavier_normal_):
    torch.manual_seed(seed)
    weight = torch.empty(shape)
    init_method(weight)
    return weight


def _seeded(seed, layer_class, *args, **kwargs):
    torch.manual_seed(seed)
    return layer_class(*args, **kwargs)


def _shard(tensor, dim):
    return torch.chunk(tensor, mpu.get_model_parallel_world_size(), dim)[mpu.get_model_parallel_rank()]


def _inputs(*shape):
    """The same input and output-gradient probe on every rank."""
    generator = torch.Generator().manual_seed(1234)
    return torch.randn(*shape, generator=generator), torch.randn(BATCH, SEQ, OUT, generator=generator)


def _check_column(gather_output):
    layer = _seeded(7, mpu.ColumnParallelLinear, IN, OUT, gather_output=gather_output)
    with torch.no_grad():
        layer.bias.copy_(_shard(torch.linspace(-1, 1, OUT), 0))
    master = _master((OUT, IN), 7)
    x, probe = _inputs(BATCH, SEQ, IN)
    x_ref = x.clone().requires_grad_()
    out_ref = F.linear(x_ref, master.requires_grad_(), torch.linspace(-1, 1, OUT))
    (out_ref * probe).sum().backward()

    x.requires_grad_()
    out = layer(x)
    expected_out, used_probe = (out_ref, probe) if gather_output else (_shard(out_ref, -1), _shard(probe, -1))
    assert_rel_close(out, expected_out, what="column output")
    (out * used_probe).sum().backward()
    assert_rel_close(x.grad, x_ref.grad, what="column input grad")
    assert_rel_close(layer.weight.grad, _shard(master.grad, 0), what="column weight grad")
    assert layer.weight.tensor_model_parallel and layer.bias.tensor_model_parallel


def _check_row(input_is_parallel):
    layer = _seeded(8, mpu.RowParallelLinear, IN, OUT, input_is_parallel=input_is_parallel)
    with torch.no_grad():
        layer.bias.copy_(torch.linspace(-1, 1, OUT))
    master = _master((OUT, IN), 8)
    x, probe = _inputs(BATCH, SEQ, IN)
    x_ref = x.clone().requires_grad_()
    out_ref = F.linear(x_ref, master.requires_grad_(), torch.linspace(-1, 1, OUT))
    (out_ref * probe).sum().backward()

    x_here = (_shard(x, -1) if input_is_parallel else x).clone().requires_grad_()
    out = layer(x_here)
    assert_rel_close(out, out_ref, what="row output")
    (out * probe).sum().backward()
    expected_x_grad = _shard(x_ref.grad, -1) if input_is_parallel else x_ref.grad
    assert_rel_close(x_here.grad, expected_x_grad, what="row input grad")
    assert_rel_close(layer.weight.grad, _shard(master.grad, 1), what="row weight grad")
    assert_rel_close(layer.bias.grad, probe.sum(dim=(0, 1)), what="row bias grad")
    assert not getattr(layer.bias, "tensor_model_parallel", False)


def _check_embedding():
    layer = _seeded(9, mpu.VocabParallelEmbedding, VOCAB, OUT)
    master = _master((VOCAB, OUT), 9).requires_grad_()
    ids = torch.randint(0, VOCAB, (BATCH, SEQ), generator=torch.Generator().manual_seed(5))
    _, probe = _inputs(1)
    out_ref = F.embedding(ids, master)
    (out_ref * probe).sum().backward()

    out = layer(ids)
    assert_rel_close(out, out_ref, what="embedding output")
    (out * probe).sum().backward()
    assert_rel_close(layer.weight.grad, _shard(master.grad, 0), what="embedding weight grad")


def _check_strided_column():
    """stride=3 (fused QKV): each rank holds its slice of q, of k and of v, in that order."""
    layer = _seeded(10, mpu.ColumnParallelLinear, IN, 3 * OUT, stride=3, gather_output=False)
    q, k, v = torch.chunk(_master((3 * OUT, IN), 10), 3, dim=0)
    expected = torch.cat([_shard(q, 0), _shard(k, 0), _shard(v, 0)], dim=0)
    assert torch.equal(layer.weight.detach(), expected)


def _layers_body(tensor_parallel):
    mpu.initialize_model_parallel(tensor_parallel)
    assert mpu.get_model_parallel_world_size() == tensor_parallel
    for gather_output in (True, False):
        _check_column(gather_output)
    for input_is_parallel in (True, False):
        _check_row(input_is_parallel)
    _check_embedding()
    _check_strided_column()


@pytest.mark.parametrize("world_size", [1, 2, 4])
def test_layers_match_unpartitioned(world_size):
    run_distributed(world_size, _layers_body, world_size)


def _mlp_body():
    """Column(gather_output=False) -> GELU -> Row(input_is_parallel=True), the transformer MLP, at TP=2
    inside a 4-rank world (two tensor-parallel groups)."""
    mpu.initialize_model_parallel(2)
    column = _seeded(11, mpu.ColumnParallelLinear, IN, OUT, gather_output=False)
    row = _seeded(12, mpu.RowParallelLinear, OUT, IN, input_is_parallel=True)
    first, second = _master((OUT, IN), 11).requires_grad_(), _master((IN, OUT), 12).requires_grad_()
    x, _ = _inputs(BATCH, SEQ, IN)
    probe = torch.randn(BATCH, SEQ, IN, generator=torch.Generator().manual_seed(3))
    x_ref = x.clone().requires_grad_()
    out_ref = F.linear(F.gelu(F.linear(x_ref, first)), second)
    (out_ref * probe).sum().backward()

    x.requires_grad_()
    out = row(F.gelu(column(x)))
    (out * probe).sum().backward()
    assert_rel_close(out, out_ref, what="mlp output")
    assert_rel_close(x.grad, x_ref.grad, what="mlp input grad")
    assert_rel_close(column.weight.grad, _shard(first.grad, 0), what="mlp first weight grad")
    assert_rel_close(row.weight.grad, _shard(second.grad, 1), what="mlp second weight grad")


def test_column_then_row_mlp_in_two_groups():
    run_distributed(4, _mlp_body)
