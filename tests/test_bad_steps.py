"""A non-finite loss skips the optimizer step on every rank (fp32 and bf16, with and without ZeRO),
is counted in the log line, leaves the weights finite; --max-skipped-steps in a row stop the run."""

import contextlib
import io
import math
import os

import pytest
import torch

from checkpointing import read_checkpoint
from distributed import run_distributed
from gpt2_runs import expect_error, train_argv, wrapped_steps

pytestmark = pytest.mark.distributed  # multi-rank training runs: left out of `pytest -m "not distributed"`

LAYOUTS = {
    "one process, fp32": (1, [], 8),
    "one process, bf16": (1, ["--bf16"], 8),
    "2 ranks ZeRO-2": (2, ["--zero-stage", "2"], 4),
    "2 ranks ZeRO-3": (2, ["--zero-stage", "3"], 4),
}


def _with_nan_losses(argv, poisoned):
    """pretrain_gpt2.main with a NaN loss on rank 0 in the iterations `poisoned`; (lm losses, log)."""
    import torch.distributed as dist

    import pretrain_gpt2
    calls = [0]

    def poisoning(forward_step):
        def poisoned_step(batch, model, args, loss_tokens):
            calls[0] += 1
            loss, values = forward_step(batch, model, args, loss_tokens)
            if calls[0] in poisoned and dist.get_rank() == 0:
                loss = loss * float("nan")
                values = {**values, "lm loss": loss.item()}
            return loss, values
        return poisoned_step

    stdout = io.StringIO()
    with wrapped_steps(forward_step=poisoning), contextlib.redirect_stdout(stdout):
        history = pretrain_gpt2.main(argv)
    return [history[i]["lm loss"] for i in sorted(history)], stdout.getvalue()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_nan_loss_skips_its_step(layout, tmp_path, data_prefix):
    world_size, extra, batch_size = LAYOUTS[layout]
    save = str(tmp_path / "ckpt")
    argv = train_argv(data_prefix, *extra, "--train-iters", "8", "--save", save, batch_size=batch_size)
    losses, log = run_distributed(world_size, _with_nan_losses, argv, {5})[0]
    assert math.isnan(losses[4]) and all(math.isfinite(v) for i, v in enumerate(losses) if i != 4), losses
    (last_line,) = [line for line in log.splitlines() if line.startswith(" iteration        8/")]
    assert "number of skipped iterations: 1 |" in last_line
    state, _, _ = read_checkpoint(save)
    assert all(torch.isfinite(tensor.float()).all() for tensor in state.values()), "the NaN step was not applied"


def _stopped_by_skips(argv):
    """NaN losses from iteration 3 on."""
    def poisoning(forward_step):
        def poisoned_step(batch, model, args, loss_tokens):
            loss, values = forward_step(batch, model, args, loss_tokens)
            return (loss * float("nan") if model.global_steps >= 2 else loss), values
        return poisoned_step

    with wrapped_steps(forward_step=poisoning):
        return expect_error(argv)


def test_skips_in_a_row_stop_the_run(tmp_path, data_prefix):
    save = str(tmp_path / "ckpt")
    argv = train_argv(data_prefix, "--train-iters", "12", "--save", save, "--save-interval", "2",
                      "--max-skipped-steps", "3")
    message = run_distributed(1, _stopped_by_skips, argv)[0]
    assert "3 iterations in a row (up to 5) had a non-finite loss or gradient norm" in message
    assert "the last checkpoint (global_step4) is as it was" in message
    assert sorted(os.listdir(save)) == ["global_step2", "global_step4", "latest"]
