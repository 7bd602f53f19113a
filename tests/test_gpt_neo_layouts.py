"""GPT-Neo / GPT-NeoX architecture choices train to the same losses on every layout: the first 20
training losses at TP=2, 2 ranks ZeRO-2, PP=2 and 2 expert-parallel ranks equal one process (1e-4),
with lengths that differ per sample (--eod-mask-loss on packed documents); Adafactor; MoE resumes."""

import pytest
import torch

from distributed import run_distributed
from gpt2_runs import ITERS, train, train_argv

pytestmark = pytest.mark.distributed  # multi-rank training runs: left out of `pytest -m "not distributed"`

CONFIGS = {  # each covers several choices; together, every one
    "local+global, rotary, swiglu, rmsnorm, parallel residual, untied, no qkv bias":
        ["--attention-types", "global local", "--attention-window", "8", "--position-embedding-type", "rotary",
         "--rotary-pct", "0.5", "--activation", "swiglu", "--normalization", "rmsnorm", "--parallel-residual",
         "--untie-embeddings", "--no-qkv-bias"],
    "linear+local, alibi, geglu, scalenorm, rezero, no bias, unscaled":
        ["--attention-types", "linear local", "--attention-window", "6", "--position-embedding-type", "alibi",
         "--activation", "geglu", "--normalization", "scalenorm", "--rezero", "--no-bias", "--no-attention-scaling",
         "--lr", "2e-2"],  # ReZero blocks start as the identity: a higher rate to see the loss move in 20 steps
}  # axial positions and GPT-Neo's mlp_glu: with the mixture of experts below
LAYOUTS = {  # config -> [(name, world size, flags, micro batch)]
    "local+global, rotary, swiglu, rmsnorm, parallel residual, untied, no qkv bias": [
        ("TP=2", 2, ["--model-parallel-size", "2"], 8), ("2 ranks ZeRO-2", 2, ["--zero-stage", "2"], 4)],
    "linear+local, alibi, geglu, scalenorm, rezero, no bias, unscaled": [
        ("TP=2", 2, ["--model-parallel-size", "2"], 8), ("2 ranks ZeRO-2", 2, ["--zero-stage", "2"], 4),
        ("PP=2", 2, ["--pipe-parallel-size", "2"], 8)],
}


@pytest.mark.parametrize("config", CONFIGS)
def test_architecture_losses_agree_across_layouts(config, data_prefix):
    flags = [*CONFIGS[config], "--eod-mask-loss"]
    (single,) = run_distributed(1, train, train_argv(data_prefix, *flags))
    assert len(single) == ITERS and single[-1] < single[0] - 0.3, f"loss must fall: {single}"
    for name, world, layout, micro in LAYOUTS[config]:
        for losses in run_distributed(world, train, train_argv(data_prefix, *flags, *layout, batch_size=micro)):
            for i, (got, expected) in enumerate(zip(losses, single), start=1):
                assert abs(got - expected) <= 1e-4 * abs(expected), f"{name}, iteration {i}: {got} != {expected}"


def _adafactor_run(argv):
    import pretrain_gpt2
    from gpt2_runs import wrapped_steps
    seen = []

    def record_optimizer(forward_step):
        def step(batch, model, args, loss_tokens):
            seen.append(type(model.optimizer).__name__)
            return forward_step(batch, model, args, loss_tokens)
        return step
    with wrapped_steps(forward_step=record_optimizer):
        history = pretrain_gpt2.main(argv)
    return [history[i]["lm loss"] for i in sorted(history)], set(seen)


def test_adafactor_trains_alike_on_one_and_two_ranks(data_prefix):
    """GPT-Neo's optimizer, torch's Adafactor built by DeepSpeed from the ds_config DeepSpeed gets."""
    flags = ["--optimizer", "adafactor", "--lr", "0.3", "--weight-decay", "0"]  # steps relative to RMS(weight)
    (single, optimizers), = run_distributed(1, _adafactor_run, train_argv(data_prefix, *flags))
    assert optimizers == {"Adafactor"} and single[-1] < single[0] - 0.5, single
    for losses, _ in run_distributed(2, _adafactor_run, train_argv(data_prefix, *flags, "--zero-stage", "0",
                                                                   batch_size=4)):
        for i, (got, expected) in enumerate(zip(losses, single), start=1):
            assert abs(got - expected) <= 1e-4 * abs(expected), f"iteration {i}: {got} != {expected}"


MOE = ["--position-embedding-type", "axial", "--axial-pos-shape", "4", "8", "--activation", "mlp_glu",
       "--num-experts", "4", "--moe-layers", "every:2", "--moe-capacity-factor", "4.0", "--moe-loss-coeff", "0"]


def _moe_runs(argv, save):
    """The 20 iterations with a checkpoint at 10, then iterations 11-20 again from that checkpoint."""
    import mpu
    unbroken = train(argv + ["--save", save, "--save-interval", "10"])
    mpu.destroy_model_parallel()
    resumed = train(argv + ["--load", save, "--load-tag", "global_step10", "--save", save + "-resumed"])
    return unbroken, resumed


def test_mixture_of_experts_on_two_ranks_and_resumed(data_prefix, tmp_path):
    """Experts (GPT-Neo's mlp_glu, axial positions) spread over 2 ranks (all-to-all over gloo) under ZeRO-2
    give one process's losses (the
    balance loss is off here: GShard's loss is per rank's tokens, so it differs with the layout); a run
    resumed from its step-10 checkpoint, experts' files included, continues exactly."""
    (single,) = run_distributed(1, train, train_argv(data_prefix, *MOE))
    assert single[-1] < single[0] - 0.5, single
    for unbroken, resumed in run_distributed(2, _moe_runs, train_argv(
            data_prefix, *MOE, "--moe-expert-parallel-size", "2", "--zero-stage", "2", batch_size=4),
            str(tmp_path / "moe")):
        for i, (got, expected) in enumerate(zip(unbroken, single), start=1):
            assert abs(got - expected) <= 1e-4 * abs(expected), f"iteration {i}: {got} != {expected}"
        assert resumed == unbroken[10:]
    (balance,) = run_distributed(1, train, train_argv(data_prefix, *MOE[:-1], "0.01"), "moe loss")
    assert all(0.9 < value < 4.0 for value in balance)  # E x sum(fraction x probability): 1 when balanced


def test_the_balance_loss_trains_the_gates_under_activation_checkpointing(data_prefix):
    """A checkpointed segment runs its forward without autograd: the MoE balance loss must still reach
    the gates, so 10 iterations with a heavy balance loss log the same lm and balance losses with and
    without --checkpoint-activations (both ways of checkpointing)."""
    argv = train_argv(data_prefix, *MOE[:-1], "1.0", "--train-iters", "10")
    (plain,) = run_distributed(1, _lm_and_balance_losses, argv)
    for how in (["--checkpoint-activations"], ["--checkpoint-activations", "--deepspeed-activation-checkpointing"]):
        (checkpointed,) = run_distributed(1, _lm_and_balance_losses, argv + how)
        for i, (got, expected) in enumerate(zip(checkpointed, plain), start=1):
            assert got == pytest.approx(expected, rel=1e-5), f"{how}, iteration {i}: {got} != {expected}"


def _lm_and_balance_losses(argv):
    import pretrain_gpt2
    history = pretrain_gpt2.main(argv)
    return [(history[i]["lm loss"], history[i]["moe loss"]) for i in sorted(history)]


def _shared_weights_after_training(argv):
    """This rank's non-expert parameters after training."""
    from deepspeed.moe.utils import is_moe_param

    from gpt2_runs import train_keeping_engine
    _, engine = train_keeping_engine(argv)
    return {name: p.detach().clone() for name, p in engine.module.named_parameters() if not is_moe_param(p)}


def test_expert_parallel_replicas_stay_alike_at_zero0_fp32(data_prefix):
    """ZeRO-0 fp32 steps the torch optimizer under our clipping: the norm must take every rank's experts
    (summed over the expert-parallel group), or the two data-parallel replicas clip their shared weights
    by different factors and drift apart. A clip of 0.05 binds at every step."""
    argv = train_argv(data_prefix, *MOE, "--moe-expert-parallel-size", "2", "--zero-stage", "0",
                      "--clip-grad", "0.05", "--train-iters", "10", batch_size=4)
    first, second = run_distributed(2, _shared_weights_after_training, argv)
    assert first.keys() == second.keys() and len(first) > 10
    different = [name for name in first if not torch.equal(first[name], second[name])]
    assert not different, f"non-expert parameters differ between the data-parallel ranks: {different}"
