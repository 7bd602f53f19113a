"""The learning-rate schedule: by hand, and on the optimizer DeepSpeed actually steps."""

import math
import os

import pytest

from distributed import run_distributed
from gpt2_runs import train, train_argv
from learning_rates import learning_rate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_schedules_by_hand():
    lr = lambda step, style: learning_rate(step, 1.0, 0.1, warmup_iters=10, decay_iters=110, style=style)  # noqa
    assert [lr(s, "linear") for s in (0, 4, 9)] == [0.1, 0.5, 1.0]
    assert lr(60, "linear") == pytest.approx(0.55) and lr(110, "linear") == 0.1 and lr(500, "linear") == 0.1
    assert lr(60, "cosine") == pytest.approx(0.55) and lr(35, "cosine") == pytest.approx(0.1 + 0.9 * (1 + math.cos(math.pi / 4)) / 2)
    assert lr(60, "exponential") == pytest.approx(0.5 ** 0.5) and lr(109, "exponential") > 0.5
    assert learning_rate(100, 1.0, 0.6, 0, 100, "exponential") == 0.6, "floored at --min-lr"
    assert lr(60, "constant") == 1.0 and lr(1000, "constant") == 1.0


@pytest.mark.parametrize("style", ["cosine", "exponential"])
def test_engine_optimizer_follows_the_schedule(data_prefix, style):
    """Pitfall: a scheduler on an optimizer DeepSpeed discarded leaves the real learning rate constant."""
    (rates,) = run_distributed(1, train, train_argv(data_prefix, "--lr-decay-style", style, "--min-lr", "1e-4",
                                                        "--train-iters", "8", "--warmup", "0.25"), "learning rate")
    expected = [learning_rate(step, 1e-3, 1e-4, 2, 8, style) for step in range(1, 9)]
    assert rates == pytest.approx(expected, rel=1e-9)
    assert rates[1] > rates[4] > rates[-1], "the rate decays"


def test_deepspeed_scheduler_from_the_config(data_prefix):
    config = os.path.join(REPO, "ds_configs", "ds_zero1_warmup_cosine.json")
    (rates,) = run_distributed(1, train, train_argv(data_prefix, "--deepspeed_config", config,
                                                        "--train-iters", "8", "--warmup", "0.5"), "learning rate")
    assert rates[:4] == sorted(rates[:4]) and rates[4:] == sorted(rates[4:], reverse=True)
    assert max(rates) == pytest.approx(1e-3, rel=0.05) and rates[-1] < 1e-4
