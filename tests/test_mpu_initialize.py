"""Group layout (tensor fastest, then data, then pipeline) and DeepSpeed taking mpu as its mpu."""

import pytest
import torch
import torch.distributed as dist

import mpu
from distributed import run_distributed

# Hand-written from the layout rule rank = pp * (dp * tp) + dp_rank * tp + tp_rank.
EXPECTED_GROUPS = {
    # (tp, pp): {kind: groups}
    (2, 2): {"tensor": [[0, 1], [2, 3]], "data": [[0], [1], [2], [3]], "pipeline": [[0, 2], [1, 3]]},
    (2, 1): {"tensor": [[0, 1], [2, 3]], "data": [[0, 2], [1, 3]], "pipeline": [[0], [1], [2], [3]]},
}


def _my_groups():
    return {"tensor": mpu.get_model_parallel_group(), "data": mpu.get_data_parallel_group(),
            "pipeline": mpu.get_pipeline_model_parallel_group()}


def _layout_body():
    rank = dist.get_rank()
    for (tp, pp), expected in EXPECTED_GROUPS.items():
        mpu.initialize_model_parallel(tp, pp)
        members = {kind: dist.get_process_group_ranks(group) for kind, group in _my_groups().items()}
        everyone = [None] * dist.get_world_size()
        dist.all_gather_object(everyone, members)
        for kind, groups in expected.items():
            assert members[kind] in groups, f"{(tp, pp)} {kind}: rank {rank} in {members[kind]}"
            assert sorted({tuple(m[kind]) for m in everyone}) == sorted(map(tuple, groups))
            assert sum(rank in g for g in groups) == 1
        assert mpu.get_model_parallel_world_size() == tp
        assert mpu.get_pipeline_model_parallel_world_size() == pp
        assert mpu.get_data_parallel_world_size() == 4 // (tp * pp)
        assert mpu.get_model_parallel_rank() == members["tensor"].index(rank)
        assert mpu.get_data_parallel_rank() == members["data"].index(rank)
        assert mpu.get_pipeline_model_parallel_rank() == members["pipeline"].index(rank)
        assert mpu.get_model_parallel_src_rank() == members["tensor"][0]
        assert mpu.get_data_parallel_group_ranks() == members["data"]
        mpu.destroy_model_parallel()

    with pytest.raises(ValueError, match=r"world size 4 is not divisible by --model-parallel-size 3"):
        mpu.initialize_model_parallel(3)
    with pytest.raises(ValueError, match=r"--pipe-parallel-size 4 = 8"):
        mpu.initialize_model_parallel(2, 4)
    with pytest.raises(RuntimeError, match="not initialized"):
        mpu.get_model_parallel_rank()
    mpu.initialize_model_parallel(2)
    with pytest.raises(RuntimeError, match="already initialized"):
        mpu.initialize_model_parallel(2)


def test_group_layouts_on_four_ranks():
    run_distributed(4, _layout_body)


IN, HIDDEN, BATCH = 8, 12, 4


def _full_model_grad_norm(x, y):
    """The single-process computation of the same two-layer model's gradient norm on the global batch."""
    first, second = torch.nn.Linear(IN, HIDDEN), torch.nn.Linear(HIDDEN, 1)
    for layer, seed in ((first, 31), (second, 32)):
        torch.manual_seed(seed)
        torch.nn.init.xavier_normal_(layer.weight)
        torch.nn.init.zeros_(layer.bias)
    loss = ((second(torch.relu(first(x))).squeeze(-1) - y) ** 2).mean()
    loss.backward()
    return torch.sqrt(sum(p.grad.pow(2).sum() for p in (*first.parameters(), *second.parameters()))).item()


class _TwoLayer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(31)
        self.first = mpu.ColumnParallelLinear(IN, HIDDEN, gather_output=False)
        torch.manual_seed(32)
        self.second = mpu.RowParallelLinear(HIDDEN, 1, input_is_parallel=True)

    def forward(self, x, y):
        return ((self.second(torch.relu(self.first(x))).squeeze(-1) - y) ** 2).mean()


def _deepspeed_body(zero_stage):
    """TP=2 x DP=2: DeepSpeed uses mpu's groups, so its gradient norm is the full model's."""
    import deepspeed
    from deepspeed.runtime.utils import clip_grad_norm_
    mpu.initialize_model_parallel(2)
    generator = torch.Generator().manual_seed(33)
    x, y = torch.randn(2 * BATCH, IN, generator=generator), torch.randn(2 * BATCH, generator=generator)
    config = {"train_micro_batch_size_per_gpu": BATCH, "gradient_accumulation_steps": 1,
              "optimizer": {"type": "SGD", "params": {"lr": 0.1}},
              "zero_optimization": {"stage": zero_stage}, "zero_allow_untested_optimizer": True,
              "gradient_clipping": 100.0}
    model = _TwoLayer()
    engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=config, mpu=mpu)
    assert engine.dp_world_size == 2
    here = slice(mpu.get_data_parallel_rank() * BATCH, (mpu.get_data_parallel_rank() + 1) * BATCH)
    engine.backward(engine(x[here], y[here]))
    if zero_stage == 0:  # the engine's ZeRO-0 fp32 clipping computes this norm but does not keep it
        got = float(clip_grad_norm_(engine.module.parameters(), max_norm=1e9, mpu=mpu))
    engine.step()
    if zero_stage > 0:
        got = float(engine.get_global_grad_norm())
    expected = _full_model_grad_norm(x, y)
    assert abs(got - expected) <= 1e-5 * expected, f"ZeRO-{zero_stage}: grad norm {got} != {expected}"


@pytest.mark.parametrize("zero_stage", [0, 2])
def test_deepspeed_takes_mpu(zero_stage):
    run_distributed(4, _deepspeed_body, zero_stage)
