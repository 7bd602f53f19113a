"""GPT-2 pretraining end to end: the same losses on every parallel layout (pipeline stages included),
clear errors (resumption: test_resume.py)."""

import json
import os

import pytest

from distributed import run_distributed
from gpt2_runs import ITERS, expect_error, train, train_argv

pytestmark = pytest.mark.distributed  # multi-rank training runs: left out of `pytest -m "not distributed"`

@pytest.fixture(scope="module")
def reference(data_prefix):
    """One process, micro batch 8."""
    (losses,) = run_distributed(1, train, train_argv(data_prefix))
    assert len(losses) == ITERS and losses[-1] < losses[0] - 0.5, f"loss must fall: {losses}"
    return losses


def _assert_same_losses(losses, reference, rtol=1e-4):
    assert len(losses) == len(reference)
    for i, (got, expected) in enumerate(zip(losses, reference), start=1):
        assert abs(got - expected) <= rtol * abs(expected), f"iteration {i}: lm loss {got} != {expected}"


LAYOUTS = {
    "1 rank, micro 4 x accumulation 2": (1, ["--gradient-accumulation-steps", "2"], 4),
    "2 ranks ZeRO-0": (2, ["--zero-stage", "0"], 4),
    "2 ranks ZeRO-1": (2, ["--zero-stage", "1"], 4),
    "2 ranks ZeRO-2": (2, ["--zero-stage", "2"], 4),
    "2 ranks ZeRO-3": (2, ["--zero-stage", "3"], 4),
    "TP=2 ZeRO-3, with evaluation": (2, ["--model-parallel-size", "2", "--zero-stage", "3", "--eval-iters", "1",
                                         "--eval-interval", "10"], 8),
    "TP=2 x DP=2 ZeRO-2": (4, ["--model-parallel-size", "2", "--zero-stage", "2"], 4),
    "activation checkpointing (mpu)": (1, ["--checkpoint-activations"], 8),
    "PP=2, micro 4 x accumulation 2, with evaluation": (
        2, ["--pipe-parallel-size", "2", "--gradient-accumulation-steps", "2", "--eval-iters", "1",
            "--eval-interval", "10"], 4),
    "TP=2 x PP=2 ZeRO-1, micro 4 x accumulation 2": (
        4, ["--model-parallel-size", "2", "--pipe-parallel-size", "2", "--zero-stage", "1",
            "--gradient-accumulation-steps", "2"], 4),
    "PP=2 x DP=2, activation checkpointing, uniform partition": (
        4, ["--pipe-parallel-size", "2", "--checkpoint-activations", "--pipe-partition-method", "uniform"], 4),
    "TP=2, DeepSpeed activation checkpointing, partitioned": (
        2, ["--model-parallel-size", "2", "--checkpoint-activations", "--deepspeed-activation-checkpointing",
            "--partition-activations"], 8),
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_losses_agree_across_layouts(layout, reference, data_prefix):
    world_size, extra, batch_size = LAYOUTS[layout]
    losses = run_distributed(world_size, train, train_argv(data_prefix, *extra, batch_size=batch_size))
    for rank_losses in losses:
        _assert_same_losses(rank_losses, reference)


def _printed_run(argv):
    import contextlib
    import io
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        losses = train(argv)
    return losses, printed.getvalue()


def test_timing_breakdown_logs_the_parts_of_the_step_and_changes_no_loss(reference, data_prefix):
    """--timing-breakdown: each log line gives forward+loss, backward, optimizer and rest as shares of
    the iterations' time (here with accumulation, so forward and backward run twice an iteration)."""
    import re
    ((losses, printed),) = run_distributed(1, _printed_run, train_argv(data_prefix, "--timing-breakdown",
                                                                      "--gradient-accumulation-steps", "2",
                                                                      batch_size=4))
    _assert_same_losses(losses, reference)
    lines = [line for line in printed.splitlines() if "lm loss:" in line]
    assert len(lines) == ITERS
    for line in lines:
        shares = dict(re.findall(r" (forward\+loss|backward|optimizer|rest) share: (-?[0-9.]+)%", line))
        assert set(shares) == {"forward+loss", "backward", "optimizer", "rest"}, line
        assert all(float(share) > 0 for share in shares.values()), line
        assert abs(sum(float(share) for share in shares.values()) - 100) < 0.5, line


def _errors_body(data_prefix, tmp, world_size):
    messages = {}
    if world_size == 1:
        messages["fp16"] = expect_error(train_argv(data_prefix, "--fp16"))
        config = os.path.join(tmp, "batch.json")
        with open(config, "w") as f:
            f.write('{"train_batch_size": 10, "train_micro_batch_size_per_gpu": 4}')
        messages["batch"] = expect_error(train_argv(data_prefix, "--deepspeed_config", config, batch_size=4))
        messages["heads"] = expect_error(train_argv(data_prefix, "--num-attention-heads", "2",
                                                     "--model-parallel-size", "4"))
        return messages
    messages["world"] = expect_error(train_argv(data_prefix, "--model-parallel-size", "4",
                                                 "--num-attention-heads", "4"))
    return messages


def test_bad_setups_stop_with_one_clear_message(tmp_path, data_prefix):
    (single,) = run_distributed(1, _errors_body, data_prefix, str(tmp_path), 1)
    assert "--fp16: DeepSpeed does not support fp16 on the CPU accelerator" in single["fp16"] and "--bf16" in single["fp16"]
    assert "train_batch_size 10 is not divisible by micro batch 4 x data-parallel size 1" in single["batch"]
    assert "--num-attention-heads 2 is not divisible by --model-parallel-size 4" in single["heads"]
    double = run_distributed(2, _errors_body, data_prefix, str(tmp_path), 2)[0]
    assert "world size 2 is not divisible by --model-parallel-size 4" in double["world"]


def test_eod_mask_loss_is_a_mean_over_the_global_batch(tmp_path, sample_texts):
    """Short documents of 2 to 12 words: --eod-mask-loss leaves a different number of tokens in each
    micro-batch, and 2 ranks ZeRO-2 (micro batch 4) still log one process's losses (batch 8), to 1e-5
    (measured: 3e-7; averaging per-micro-batch means instead gives 9e-5)."""
    corpus = tmp_path / "short.jsonl"
    with open(corpus, "w") as f:
        for number, text in enumerate(sample_texts[:1500]):
            f.write(json.dumps({"text": " ".join(text.split()[:2 + number % 11])}) + "\n")
    data = ("--train-data", str(corpus), "--data-cache-dir", str(tmp_path / "cache"), "--eod-mask-loss")
    (single,) = run_distributed(1, train, train_argv(None, *data))
    for losses in run_distributed(2, train, train_argv(None, *data, "--zero-stage", "2", batch_size=4)):
        _assert_same_losses(losses, single, rtol=1e-5)


def test_a_global_batch_size_derives_the_accumulation(data_prefix):
    """Megatron-LM's --micro-batch-size 4 --global-batch-size 8 on one rank is ours --batch-size 4
    --gradient-accumulation-steps 2: the same losses."""
    short = ("--train-iters", "3")
    (theirs,) = run_distributed(1, train, train_argv(data_prefix, *short, "--micro-batch-size", "4",
                                                     "--global-batch-size", "8"))
    (ours,) = run_distributed(1, train, train_argv(data_prefix, *short, "--gradient-accumulation-steps", "2",
                                                   batch_size=4))
    assert theirs == ours


def test_a_corpus_folder_gets_no_caches(tmp_path, sample_texts):
    """--train-data FILE tokenizes into --data-cache-dir; the corpus folder (maybe read-only) is left alone."""
    corpus, cache = tmp_path / "corpus", tmp_path / "cache"
    corpus.mkdir()
    (corpus / "mine.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in sample_texts[:300]))
    (losses,) = run_distributed(1, train, train_argv(None, "--train-iters", "2", "--train-data",
                                                     str(corpus / "mine.jsonl"), "--data-cache-dir", str(cache)))
    assert len(losses) == 2 and os.listdir(corpus) == ["mine.jsonl"] and os.listdir(cache)
