"""Pipeline parallelism beyond the loss agreement of test_pretrain_gpt2's layouts (resuming: test_resume.py):
a TP=2 x PP=2 checkpoint reads back as the one-process model, and layouts
that do not fit are one clear error."""

import os

import pytest

from checkpointing import read_checkpoint
from distributed import assert_rel_close, run_distributed
from gpt2_runs import expect_error, train, train_argv

pytestmark = pytest.mark.distributed  # multi-rank training runs: left out of `pytest -m "not distributed"`

PIPELINE = ("--pipe-parallel-size", "2")


def test_a_tensor_and_pipeline_parallel_checkpoint_reads_as_one_model(tmp_path, data_prefix):
    """What the converter and the evaluation scripts read from a TP=2 x PP=2 checkpoint is the model one
    process trains."""
    single, layered = str(tmp_path / "single"), str(tmp_path / "layered")
    short = ("--train-iters", "3")
    run_distributed(1, train, train_argv(data_prefix, *short, "--save", single))
    run_distributed(4, train, train_argv(data_prefix, *short, *PIPELINE, "--model-parallel-size", "2",
                                         "--zero-stage", "1", "--save", layered))
    assert "layer_04-model_01-model_states.pt" in os.listdir(os.path.join(layered, "global_step3"))  # stage 2, TP rank 1
    expected, _, _ = read_checkpoint(single)
    got, args, _ = read_checkpoint(layered)
    assert args["pipe_parallel_size"] == 2 and expected.keys() == got.keys()
    for name in expected:  # Adam divides tiny gradients (of biases) by their own size: rounding grows to ~1e-4
        assert_rel_close(got[name], expected[name], rtol=1e-3, what=name)


def _errors_body(data_prefix):
    return {"world": expect_error(train_argv(data_prefix, *PIPELINE, "--model-parallel-size", "2")),
            "zero": expect_error(train_argv(data_prefix, *PIPELINE, "--zero-stage", "2")),
            "bert": expect_error(["--pipe-parallel-size", "2"], entry="pretrain_bert")}


def test_layouts_that_do_not_fit_are_one_clear_error(data_prefix):
    layers = run_distributed(1, expect_error, train_argv(data_prefix, *PIPELINE, "--num-layers", "3"))[0]
    assert "--num-layers 3 does not split over --pipe-parallel-size 2 stages" in layers
    messages = run_distributed(2, _errors_body, data_prefix)[0]
    assert "world size 2 is not divisible by --model-parallel-size 2 x --pipe-parallel-size 2" in messages["world"]
    assert "ZeRO stage 2 with --pipe-parallel-size 2" in messages["zero"] and "stage 0 or 1" in messages["zero"]
    assert "has no pipeline form" in messages["bert"]
