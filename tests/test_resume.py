"""A resumed run is the unbroken run, with dropout on (the defaults): stopped by SIGTERM between log
lines and then by --exit-interval, at one process, 2 ranks ZeRO-2, TP=2 and PP=2, every iteration logs
the unbroken run's loss, the first log line after a resume averages the iterations it holds, and the
final weights are equal. A resume with nothing left to train, or on other data, says so."""

import contextlib
import io
import itertools
import os
import re
import shutil
import signal

import pytest
import torch
import torch.distributed as dist

from checkpointing import read_checkpoint
from distributed import run_distributed
from gpt2_runs import ITERS, expect_error, train_argv, wrapped_steps

pytestmark = pytest.mark.distributed  # multi-rank training runs: left out of `pytest -m "not distributed"`

DROPOUT = 0.1  # the default of --hidden-dropout and --attention-dropout
SIGTERM_AT, EXIT_INTERVAL, LOG_INTERVAL = 7, 15, 5

LAYOUTS = {
    "one process": (1, [], 8),
    "2 ranks ZeRO-2": (2, ["--zero-stage", "2"], 4),
    "TP=2": (2, ["--model-parallel-size", "2"], 8),
    "PP=2": (2, ["--pipe-parallel-size", "2"], 8),
}


def _run(argv, sigterm_at=None):
    """pretrain_gpt2.main on this rank; rank 0 sends itself SIGTERM while it reads the batch of iteration
    `sigterm_at`. Returns ({iteration: lm loss}, the log lines)."""
    import pretrain_gpt2
    calls = itertools.count(1)

    def then_sigterm(get_batch):
        def batch_then_sigterm(data_iterator, args):
            if next(calls) == sigterm_at and dist.get_rank() == 0:
                os.kill(os.getpid(), signal.SIGTERM)
            return get_batch(data_iterator, args)
        return batch_then_sigterm

    stdout = io.StringIO()
    with wrapped_steps(get_batch=then_sigterm), contextlib.redirect_stdout(stdout):
        history = pretrain_gpt2.main(argv)
    return {i: values["lm loss"] for i, values in history.items()}, stdout.getvalue().splitlines()


def _logged_loss(lines, iteration):
    (line,) = [line for line in lines if re.match(rf" iteration +{iteration}/", line)]
    return re.search(r"lm loss: (\S+) \|", line).group(1)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_resumed_run_with_dropout_is_the_unbroken_run(layout, tmp_path, data_prefix):
    world_size, extra, batch_size = LAYOUTS[layout]
    unbroken, resumed = str(tmp_path / "unbroken"), str(tmp_path / "resumed")

    def argv(*more):
        return train_argv(data_prefix, *extra, "--log-interval", str(LOG_INTERVAL), *more,
                          batch_size=batch_size, dropout=DROPOUT)

    full, _ = run_distributed(world_size, _run, argv("--save", unbroken))[0]
    interrupted = argv("--save", resumed, "--load", resumed, "--exit-interval", str(EXIT_INTERVAL))
    first, _ = run_distributed(world_size, _run, interrupted, SIGTERM_AT)[0]
    second, lines = run_distributed(world_size, _run, interrupted)[0]
    third, _ = run_distributed(world_size, _run, interrupted)[0]
    assert (list(first), list(second), list(third)) == (
        list(range(1, SIGTERM_AT + 1)), list(range(SIGTERM_AT + 1, EXIT_INTERVAL + 1)),
        list(range(EXIT_INTERVAL + 1, ITERS + 1)))
    assert {**first, **second, **third} == full, "a resumed run must log the unbroken run's losses"
    window = [second[i] for i in range(SIGTERM_AT + 1, 11)]
    assert _logged_loss(lines, 10) == f"{sum(window) / len(window):.6E}", \
        "the first log line after resuming averages the iterations since the resume"
    expected, _, _ = read_checkpoint(unbroken)
    got, _, _ = read_checkpoint(resumed)
    assert expected.keys() == got.keys()
    assert all((expected[k] == got[k]).all() for k in expected), "final weights must be equal"


def _finished_body(data_prefix, other_prefix, saved):
    import mpu
    import pretrain_gpt2
    finished = expect_error(train_argv(data_prefix, "--train-iters", "2", "--load", saved))
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        mpu.destroy_model_parallel()
        evaluated = pretrain_gpt2.main(train_argv(data_prefix, "--train-iters", "2", "--load", saved, "--skip-train",
                                                  "--eval-iters", "1"))
        mpu.destroy_model_parallel()
        continued = pretrain_gpt2.main(train_argv(other_prefix, "--train-iters", "3", "--load", saved))
        mpu.destroy_model_parallel()  # the bundled corpus, tokenized into the test data's folder
        pretrain_gpt2.main(train_argv(None, "--train-iters", "3", "--load", saved, "--data-cache-dir",
                                      os.path.dirname(data_prefix)))
    return finished, evaluated, list(continued), stdout.getvalue()


def test_a_finished_or_moved_run_says_so(tmp_path, data_prefix):
    saved, other = str(tmp_path / "saved"), str(tmp_path / "other_text_document")
    for suffix in (".bin", ".idx"):
        shutil.copy(data_prefix + suffix, other + suffix)
    run_distributed(1, _run, train_argv(data_prefix, "--train-iters", "2", "--save", saved))
    finished, evaluated, continued, output = run_distributed(1, _finished_body, data_prefix, other, saved)[0]
    assert "checkpoint global_step2 is at iteration 2, which already reaches --train-iters 2: nothing to train" \
        in finished and "--skip-train" in finished
    assert evaluated == {} and "test loss at the end" in output, "--skip-train evaluates and trains nothing"
    assert continued == [3]
    assert f"the checkpoint was trained on --data-path {data_prefix} but this run reads --data-path {other};" in output
    assert "this run reads the bundled corpus (--train-data sample)" in output


def _recorded_batches(argv):
    """pretrain_gpt2.main on this rank; ({iteration: lm loss and learning rate}, the input tokens of each
    micro-batch this rank read, in order)."""
    import pretrain_gpt2
    seen = []

    def recording(get_batch):
        def recorded(data_iterator, args):
            batch = get_batch(data_iterator, args)
            seen.append(batch[0][0])
            return batch
        return recorded

    with wrapped_steps(get_batch=recording):
        return pretrain_gpt2.main(argv), seen


def test_a_resume_reads_the_samples_an_unbroken_run_reads(tmp_path, data_prefix):
    """One process for 10 of --train-iters 10, then --train-iters 20 on 2 data-parallel ranks (micro
    batch 4): iterations 11-20 read the samples of iterations 11-20 of an unbroken one-process run. At a
    quarter of the global batch (one process, micro batch 2) they read on from sample 80 in the same
    order (the data is sized from the checkpoint's consumed samples, not from --train-iters alone)."""
    saved = str(tmp_path / "saved")
    (_, unbroken), = run_distributed(1, _recorded_batches, train_argv(data_prefix))
    run_distributed(1, _run, train_argv(data_prefix, "--train-iters", "10", "--save", saved))
    ranks = run_distributed(2, _recorded_batches, train_argv(data_prefix, "--load", saved, batch_size=4))
    assert [len(seen) for _, seen in ranks] == [10, 10]
    for i in range(10):
        both = torch.cat([ranks[0][1][i], ranks[1][1][i]])
        assert torch.equal(both, unbroken[10 + i]), f"iteration {11 + i} reads other samples"
    (_, smaller), = run_distributed(1, _recorded_batches, train_argv(data_prefix, "--load", saved, batch_size=2))
    assert torch.equal(torch.cat(smaller), torch.cat(unbroken[10:13])[:20])


def _schedule_body(data_prefix, saved):
    import mpu
    changed = expect_error(train_argv(data_prefix, "--load", saved, "--lr", "2e-3"))
    mpu.destroy_model_parallel()
    override, _ = _recorded_batches(train_argv(data_prefix, "--load", saved, "--lr", "2e-3", "--override-lr-scheduler"))
    mpu.destroy_model_parallel()
    fresh_optimizer, _ = _recorded_batches(train_argv(data_prefix, "--load", saved, "--no-load-optim"))
    return changed, override[11]["learning rate"], fresh_optimizer[11]["learning rate"]


def test_the_learning_rate_schedule_on_resume(tmp_path, data_prefix):
    """Megatron's rule: a changed --lr is an error unless --override-lr-scheduler; --no-load-optim
    continues the schedule at the resumed iteration (no second warmup)."""
    from learning_rates import learning_rate
    saved = str(tmp_path / "saved")
    run_distributed(1, _run, train_argv(data_prefix, "--save", saved, "--exit-interval", "10"))
    changed, override, fresh_optimizer = run_distributed(1, _schedule_body, data_prefix, saved)[0]
    assert "the learning-rate schedule differs from the checkpoint's: --lr 0.002 (checkpoint: 0.001)" in changed
    assert "--override-lr-scheduler" in changed
    warmup = int(0.1 * ITERS)  # train_argv's --warmup 0.1
    assert override == pytest.approx(learning_rate(11, 2e-3, 0.0, warmup, ITERS, "linear"), rel=1e-9)
    assert fresh_optimizer == pytest.approx(learning_rate(11, 1e-3, 0.0, warmup, ITERS, "linear"), rel=1e-9)
