"""Each reach of deepspeed_internals.py into DeepSpeed's private API, checked against the installed
DeepSpeed: a test here fails when the behaviour a reach relies on changes. (The optimizer-state reaches
of layout-free checkpoints, at ZeRO 0-3, are checked exactly by test_universal_checkpoints.py.)"""

import os
import re

import pytest
import torch

from distributed import run_distributed


def test_another_deepspeed_release_is_one_line_naming_both():
    import deepspeed

    from deepspeed_internals import WRITTEN_FOR, DeepSpeedVersionError, require_written_version
    require_written_version()
    assert deepspeed.__version__ == WRITTEN_FOR
    with pytest.raises(DeepSpeedVersionError) as error:
        require_written_version("0.20.0")
    message = str(error.value)
    assert "\n" not in message and "0.20.0" in message and WRITTEN_FOR in message


def _engine(zero_stage=0):
    import deepspeed

    import mpu
    if not mpu.model_parallel_is_initialized():
        mpu.initialize_model_parallel(1)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 2))
    config = {"train_micro_batch_size_per_gpu": 2, "gradient_clipping": 1.0, "steps_per_print": 10 ** 9,
              "zero_optimization": {"stage": zero_stage},
              "optimizer": {"type": "AdamW", "params": {"lr": 0.1, "torch_adam": True}}}
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=config, mpu=mpu)
    return engine


def _guarded_steps_body():
    from deepspeed_internals import guard_fp32_steps
    engine = _engine()
    guard_fp32_steps(engine)
    x = torch.randn(2, 8)
    engine.backward(engine(x).pow(2).sum() * 1e3)  # a large gradient: clipped to norm 1.0
    before = [p.detach().clone() for p in engine.module.parameters()]
    grads = [p.grad.detach().clone() for p in engine.module.parameters()]
    engine.step()
    norm = engine.get_global_grad_norm()
    steps_after_clipped = [state["step"].item() for state in engine.optimizer.state.values()]
    expected_norm = torch.cat([g.flatten() for g in grads]).norm().item()
    engine.backward(engine(x).sum() * float("nan"))
    kept = [p.detach().clone() for p in engine.module.parameters()]
    engine.step()
    unchanged = all(torch.equal(a, b) for a, b in zip(kept, engine.module.parameters()))
    moved = not all(torch.equal(a, b) for a, b in zip(before, kept))
    return (norm, expected_norm, steps_after_clipped, engine.skipped_steps, unchanged, moved,
            engine.get_global_grad_norm())


def test_the_fp32_step_guard_clips_reports_and_skips():
    """DeepSpeed's ZeRO-0 fp32 step calls engine.clip_fp32_gradients and optimizer.step, reads the
    norm from engine._global_grad_norm and counts a skip from optimizer.overflow."""
    norm, expected, steps, skipped, unchanged, moved, nan_norm = run_distributed(1, _guarded_steps_body)[0]
    assert norm == pytest.approx(expected, rel=1e-5) and norm > 1.0
    assert moved and steps == [1.0] * len(steps)
    assert skipped == 1 and unchanged and nan_norm != nan_norm


def _allreduce_switch_body():
    import deepspeed_internals
    engine = _engine()
    deepspeed_internals.skip_one_rank_allreduce(engine)

    def refuse(*args, **kwargs):
        raise AssertionError("allreduce_gradients ran")
    engine.allreduce_gradients = refuse
    engine.backward(engine(torch.randn(2, 8)).sum())
    engine.step()
    stage1 = _engine(zero_stage=1)
    deepspeed_internals.skip_one_rank_allreduce(stage1)
    return engine.enable_backward_allreduce, stage1.enable_backward_allreduce


def test_the_one_rank_allreduce_switch_is_read_by_backward():
    """DeepSpeed's backward skips allreduce_gradients when enable_backward_allreduce is off; the switch
    leaves ZeRO 1-3 alone (there it would turn off the optimizer's own reduction)."""
    zero0, zero1 = run_distributed(1, _allreduce_switch_body)[0]
    assert zero0 is False and zero1 is True


def _expert_groups_body():
    import deepspeed
    from deepspeed.moe.utils import split_params_into_different_moe_groups_for_optimizer

    import mpu
    from deepspeed_internals import expert_parallel_group
    from model.moe import MoEMLP
    from model.transformer import ParallelMLP
    mpu.initialize_model_parallel(1)
    expert = ParallelMLP(8, 16, 0.0, torch.nn.init.zeros_, torch.nn.init.zeros_)
    layer = MoEMLP(expert, 8, num_experts=4, expert_parallel_size=2, top_k=1, capacity_factor=1.0, min_capacity=1,
                   seed=1, init_stds=lambda name: 0.02)
    parameters = split_params_into_different_moe_groups_for_optimizer(
        {"name": "all", "params": list(layer.parameters())})
    deepspeed.initialize(model=layer, model_parameters=parameters, mpu=mpu, config={  # makes the groups
        "train_micro_batch_size_per_gpu": 1, "optimizer": {"type": "AdamW", "params": {"torch_adam": True}}})
    groups = {name: expert_parallel_group(p) for name, p in layer.named_parameters()}
    experts = {name: group for name, group in groups.items() if "experts" in name}
    return (len(experts) > 0, all(group is not None and deepspeed.comm.get_world_size(group) == 2
                                  for group in experts.values()),
            all(group is None for name, group in groups.items() if name not in experts))


def test_an_experts_parameters_name_their_expert_parallel_group():
    assert run_distributed(2, _expert_groups_body)[0] == (True, True, True)


def test_every_accepted_ds_config_key_is_one_deepspeed_reads():
    """deepspeed_config.KNOWN_KEYS is kept by hand: each key must still be a string DeepSpeed's code
    code names, so a key DeepSpeed drops is found here."""
    import deepspeed

    from deepspeed_config import KNOWN_KEYS
    folder = os.path.dirname(deepspeed.__file__)
    text = ""
    for root, _, files in os.walk(folder):
        text += "".join(open(os.path.join(root, f), encoding="utf-8").read() for f in files if f.endswith(".py"))
    named = set(re.findall(r"""["']([a-z0-9_]+)["']""", text))
    assert not sorted(KNOWN_KEYS - named), "keys DeepSpeed's code no longer names"


def test_deepspeed_optimizer_files_hold_only_the_records_we_allow(tmp_path):
    """A ZeRO-1 optimizer file reads weights_only with optimizer_file_records() allowed, and no longer
    without them (so the list is needed, and complete for the records DeepSpeed writes)."""
    import torch.serialization

    from checkpointing.native_states import _load_optimizer_file
    run_distributed(1, _save_zero1_body, str(tmp_path))
    (path,) = [os.path.join(root, name) for root, _, names in os.walk(tmp_path) for name in names
               if name.endswith("optim_states.pt")]
    assert "optimizer_state_dict" in _load_optimizer_file(path)
    with pytest.raises(Exception, match="weights_only"):
        with torch.serialization.safe_globals([]):
            torch.load(path, map_location="cpu", weights_only=True)


def _save_zero1_body(folder):
    _engine(zero_stage=1).save_checkpoint(folder, tag="t")


class _Recorder:
    """A preconditioner that records what it sees and writes ones into every gradient."""

    def __init__(self, engine):
        self.engine, self.calls = engine, []

    def average_gradients(self):
        self.calls.append("average")

    def step(self, lr):
        grads = [p.grad for p in self.engine.module.parameters()]
        self.calls.append(("step", lr, [None if g is None else g.clone() for g in grads]))
        for g in grads:
            g.fill_(1.0)


def _precondition_reach_body(zero_stage):
    import torch.distributed as dist

    from deepspeed_internals import precondition_gradients
    engine = _engine(zero_stage)
    recorder = _Recorder(engine)
    precondition_gradients(engine, recorder)
    before = [p.detach().clone() for p in engine.module.parameters()]
    torch.manual_seed(dist.get_rank())  # each rank its own batch: local gradients differ
    engine.backward(engine(torch.randn(2, 8)).pow(2).sum())
    engine.step()
    *averaging, (_, lr, seen) = recorder.calls
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, [g.tolist() for g in seen])
    moved = [float((b - p.detach()).mean()) for b, p in zip(before, engine.module.parameters())]
    return averaging, lr, all(g is not None for g in seen), gathered, moved


@pytest.mark.parametrize("zero_stage", [0, 1])
def test_the_preconditioner_sees_whole_averaged_gradients_and_the_step_takes_what_it_writes(zero_stage):
    """ZeRO-0: after DeepSpeed's reduction, optimizer.step sees param.grad averaged over the ranks; ZeRO-1:
    optimizer.reduce_gradients sees each rank's whole local gradient in param.grad (averaged there by the
    preconditioner, asked first) and reduces what the preconditioner wrote into its partitions. Either
    way the step applies the written gradient (ones: Adam's first step moves every weight by -lr)."""
    for averaging, lr, whole, gathered, moved in run_distributed(2, _precondition_reach_body, zero_stage):
        assert averaging == ([] if zero_stage == 0 else ["average"]) and lr == 0.1 and whole
        assert (gathered[0] == gathered[1]) == (zero_stage == 0), "ZeRO-0 averaged, ZeRO-1 each rank's own"
        assert all(abs(m - 0.1) < 2e-3 for m in moved), moved


def _model_outlives_its_engine(zero_stage, release):
    import gc
    import weakref

    from deepspeed_internals import release_engine
    engine = _engine(zero_stage)
    engine.backward(engine(torch.randn(2, 8)).sum())
    engine.step()
    model = weakref.ref(engine.module)
    if release:
        release_engine(engine)
    del engine
    gc.collect()
    return model() is not None


@pytest.mark.parametrize("zero_stage", [0, 1, 3])
def test_a_released_engine_lets_its_model_go(zero_stage):
    """Without release_engine DeepSpeed's hooks (and ZeRO-3's module stack) keep the model alive."""
    assert run_distributed(1, _model_outlives_its_engine, zero_stage, False) == [zero_stage > 0]
    assert run_distributed(1, _model_outlives_its_engine, zero_stage, True) == [False]
