"""Which checkpoint a resume loads: a tag that a crash left half-written (rank 0's files there, rank 1's
ZeRO shard not, `latest` naming it), or one with a truncated file, is passed over with one line for
the newest complete tag, and the run still ends as an unbroken run does; --load-tag picks one;
--keep-last-n-checkpoints prunes; nothing complete is one clear error."""

import contextlib
import io
import json
import os
import shutil

import pytest
import torch

from checkpointing import read_checkpoint
from checkpointing.tags import MANIFEST
from distributed import run_distributed
from gpt2_runs import expect_error, train_argv

pytestmark = pytest.mark.distributed  # multi-rank training runs: left out of `pytest -m "not distributed"`

ZERO2 = ("--zero-stage", "2", "--attention-dropout", "0.1", "--hidden-dropout", "0.1", "--lr-decay-iters", "6")
SHARD_OF_RANK_1 = "zero_pp_rank_1_mp_rank_00_optim_states.pt"


def _run(argv):
    import pretrain_gpt2
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        history = pretrain_gpt2.main(argv)
    return sorted(history), stdout.getvalue()


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_prefix):
    """An unbroken 6-iteration run, and one saved at every iteration up to 4 (2 ranks, ZeRO-2, dropout on)."""
    root = tmp_path_factory.mktemp("tags")
    unbroken, saved = str(root / "unbroken"), str(root / "saved")
    run_distributed(2, _run, train_argv(data_prefix, *ZERO2, "--train-iters", "6", "--save", unbroken,
                                        batch_size=4))
    run_distributed(2, _run, train_argv(data_prefix, *ZERO2, "--train-iters", "4", "--save", saved,
                                        "--save-interval", "1", batch_size=4))
    return {"unbroken": unbroken, "saved": saved, "data": data_prefix}


def _copy(runs, tmp_path):
    target = str(tmp_path / "copy")
    shutil.copytree(runs["saved"], target)
    return target


def _resume(runs, directory, *extra):
    return run_distributed(2, _run, train_argv(runs["data"], *ZERO2, "--train-iters", "6", "--save", directory,
                                               "--load", directory, *extra, batch_size=4))[0]


def _assert_ends_as_unbroken(runs, directory):
    expected, _, _ = read_checkpoint(runs["unbroken"])
    got, _, _ = read_checkpoint(directory)
    assert all(torch.equal(expected[k], got[k]) for k in expected), "the resumed run must end as the unbroken one"


def test_a_save_cut_off_by_a_crash_is_passed_over(runs, tmp_path):
    """DeepSpeed's own save writes `latest` before rank 1 has written its ZeRO shard: that window."""
    directory = _copy(runs, tmp_path)
    os.remove(os.path.join(directory, "global_step4", MANIFEST))
    os.remove(os.path.join(directory, "global_step4", SHARD_OF_RANK_1))
    iterations, log = _resume(runs, directory)
    assert iterations == [4, 5, 6]
    assert (f"checkpoint global_step4 is incomplete ({SHARD_OF_RANK_1} is missing); resuming from global_step3, "
            "the newest complete checkpoint") in log
    _assert_ends_as_unbroken(runs, directory)


def test_a_truncated_file_is_passed_over(runs, tmp_path):
    directory = _copy(runs, tmp_path)
    path = os.path.join(directory, "global_step4", "mp_rank_00_model_states.pt")
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    iterations, log = _resume(runs, directory)
    assert iterations == [4, 5, 6]
    assert f"mp_rank_00_model_states.pt has {size // 2} bytes, the manifest says {size}" in log
    _assert_ends_as_unbroken(runs, directory)


def test_load_tag_and_pruning(runs, tmp_path):
    directory = _copy(runs, tmp_path)
    iterations, _ = _resume(runs, directory, "--load-tag", "global_step2", "--keep-last-n-checkpoints", "2",
                            "--save-interval", "1")
    assert iterations == [3, 4, 5, 6]
    assert sorted(t for t in os.listdir(directory) if t.startswith("global_step")) == [
        "global_step2", "global_step5", "global_step6"], "the two newest, and the one resumed from"
    with open(os.path.join(directory, "global_step6", MANIFEST)) as f:
        manifest = json.load(f)
    assert manifest["iteration"] == 6 and manifest["layout"]["data_parallel"] == 2
    assert SHARD_OF_RANK_1 in manifest["files"] and "rng_state_tp00_pp00_dp001.pt" in manifest["files"]
    _assert_ends_as_unbroken(runs, directory)


def _errors_body(runs, directory):
    return (expect_error(train_argv(runs["data"], *ZERO2, "--train-iters", "6", "--load", directory, batch_size=4)),
            expect_error(train_argv(runs["data"], *ZERO2, "--train-iters", "6", "--load", directory,
                                    "--load-tag", "global_step9", batch_size=4)))


def test_nothing_complete_is_one_clear_error(runs, tmp_path):
    directory = _copy(runs, tmp_path)
    for step in range(1, 5):
        os.remove(os.path.join(directory, f"global_step{step}", SHARD_OF_RANK_1))
    nothing, missing = run_distributed(2, _errors_body, runs, directory)[0]
    assert "no complete checkpoint: checkpoint global_step4 is incomplete" in nothing and "--load-tag" in nothing
    assert "checkpoint global_step9 cannot be loaded" in missing and "does not exist" in missing
