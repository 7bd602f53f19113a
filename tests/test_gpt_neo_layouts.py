"""GPT-Neo / GPT-NeoX architecture choices train to the same losses on every layout: the first 20
training losses at TP=2, 2 ranks ZeRO-2 and PP=2 equal one process (1e-4), with lengths that differ
per sample (--eod-mask-loss on packed documents)."""

import pytest

from distributed import run_distributed
from gpt2_runs import ITERS, train, train_argv

pytestmark = pytest.mark.slow  # multi-rank training runs: left out of `pytest -m "not slow"`

CONFIGS = {  # each covers several choices; together, every one
    "local+global, rotary, swiglu, rmsnorm, parallel residual, untied, no qkv bias":
        ["--attention-types", "global local", "--attention-window", "8", "--position-embedding-type", "rotary",
         "--rotary-pct", "0.5", "--activation", "swiglu", "--normalization", "rmsnorm", "--parallel-residual",
         "--untie-embeddings", "--no-qkv-bias"],
    "linear+local, alibi, geglu, scalenorm, rezero, no bias, unscaled":
        ["--attention-types", "linear local", "--attention-window", "6", "--position-embedding-type", "alibi",
         "--activation", "geglu", "--normalization", "scalenorm", "--rezero", "--no-bias", "--no-attention-scaling",
         "--lr", "2e-2"],  # ReZero blocks start as the identity: a higher rate to see the loss move in 20 steps
    "axial, GPT-Neo's mlp_glu": ["--position-embedding-type", "axial", "--axial-pos-shape", "4", "8",
                                 "--activation", "mlp_glu"],
}
LAYOUTS = {  # config -> [(name, world size, flags, micro batch)]
    "local+global, rotary, swiglu, rmsnorm, parallel residual, untied, no qkv bias": [
        ("TP=2", 2, ["--model-parallel-size", "2"], 8), ("2 ranks ZeRO-2", 2, ["--zero-stage", "2"], 4)],
    "linear+local, alibi, geglu, scalenorm, rezero, no bias, unscaled": [
        ("TP=2", 2, ["--model-parallel-size", "2"], 8), ("PP=2", 2, ["--pipe-parallel-size", "2"], 8)],
    "axial, GPT-Neo's mlp_glu": [("TP=2", 2, ["--model-parallel-size", "2"], 8)],
}


@pytest.mark.parametrize("config", CONFIGS)
def test_architecture_losses_agree_across_layouts(config, gpt2_data_prefix):
    flags = [*CONFIGS[config], "--eod-mask-loss"]
    (single,) = run_distributed(1, train, train_argv(gpt2_data_prefix, *flags))
    assert len(single) == ITERS and single[-1] < single[0] - 0.3, f"loss must fall: {single}"
    for name, world, layout, micro in LAYOUTS[config]:
        for losses in run_distributed(world, train, train_argv(gpt2_data_prefix, *flags, *layout, batch_size=micro)):
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


def test_adafactor_trains_alike_on_one_and_two_ranks(gpt2_data_prefix):
    """GPT-Neo's optimizer, torch's Adafactor built by DeepSpeed from the ds_config DeepSpeed gets."""
    flags = ["--optimizer", "adafactor", "--lr", "0.3", "--weight-decay", "0"]  # steps relative to RMS(weight)
    (single, optimizers), = run_distributed(1, _adafactor_run, train_argv(gpt2_data_prefix, *flags))
    assert optimizers == {"Adafactor"} and single[-1] < single[0] - 0.5, single
    for losses, _ in run_distributed(2, _adafactor_run, train_argv(gpt2_data_prefix, *flags, "--zero-stage", "0",
                                                                   batch_size=4)):
        for i, (got, expected) in enumerate(zip(losses, single), start=1):
            assert abs(got - expected) <= 1e-4 * abs(expected), f"iteration {i}: {got} != {expected}"
