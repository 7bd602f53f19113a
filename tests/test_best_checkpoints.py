"""--save-best-k: the checkpoints with the lowest validation loss are kept beside the last N, a `best` file
names the lowest, --load-tag best resumes from it, and a crash while pruning loses nothing."""

import contextlib
import io
import itertools
import json
import os

import pytest
import torch

from checkpointing import tags
from distributed import run_distributed
from gpt2_runs import train_argv, wrapped_steps

SCRIPTED = [5.0, 3.0, 4.0, 2.0, 6.0]  # validation losses at iterations 2, 4, 6, 8, 10: down, then up


def _committed(directory, losses):
    """global_step1.. with manifests holding these validation losses (None: not validated)."""
    for step, loss in enumerate(losses, start=1):
        folder = directory / f"global_step{step}"
        folder.mkdir(parents=True)
        (folder / "weights.pt").write_text(str(step))
        tags.write_manifest(str(folder), step, {}, 0, loss)
    tags.write_atomically(str(directory / "latest"), f"global_step{len(losses)}")


def test_pruning_keeps_the_best_and_the_last_and_a_crash_loses_nothing(tmp_path, monkeypatch):
    _committed(tmp_path, [5.0, 3.0, None, 2.5, 6.0, None, 7.0])
    replace, calls = os.replace, []

    def crash_on_the_second_deletion(source, target):
        if str(target).endswith(".deleting"):
            calls.append(target)
            if len(calls) == 2:
                raise KeyboardInterrupt  # killed mid-prune
        return replace(source, target)
    monkeypatch.setattr(os, "replace", crash_on_the_second_deletion)
    with pytest.raises(KeyboardInterrupt):
        tags.prune(str(tmp_path), 1, {"global_step7"}, best=2)
    monkeypatch.setattr(os, "replace", replace)
    kept = {"global_step2", "global_step4", "global_step7"}
    assert (tmp_path / "best").read_text() == "global_step4"
    assert kept <= set(os.listdir(tmp_path)) and all(tags.verify(str(tmp_path), tag, 1) is None for tag in kept)
    tags.prune(str(tmp_path), 1, {"global_step7"}, best=2)
    assert sorted(os.listdir(tmp_path)) == ["best", "global_step2", "global_step4", "global_step7", "latest"]


def _scripted_validation(argv):
    """A run whose validation losses are SCRIPTED (the evaluation's forward step replaced); its log."""
    import pretrain_gpt2
    script = itertools.chain(SCRIPTED, itertools.repeat(9.0))  # then the test split's evaluation

    def scripted(forward_step):
        def step(batch, model, args, loss_tokens):
            loss, values = forward_step(batch, model, args, loss_tokens)
            return (loss, values) if torch.is_grad_enabled() else (loss, {"lm loss": next(script)})  # evaluation
        return step
    with wrapped_steps(forward_step=scripted), contextlib.redirect_stdout(io.StringIO()) as printed:
        pretrain_gpt2.main(argv)
    return printed.getvalue()


def _resume(argv):
    import pretrain_gpt2
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        pretrain_gpt2.main(argv)
    return printed.getvalue()


def test_save_best_k_keeps_the_lowest_validation_tags_and_load_tag_best_resumes(tmp_path, data_prefix):
    """Validation every 2 of 10 iterations goes 5, 3, 4, 2, 6: with --save-best-k 2 and
    --keep-last-n-checkpoints 1 the run ends with global_step8 (2.0), global_step4 (3.0) and the last."""
    save = str(tmp_path / "ckpt")
    argv = train_argv(data_prefix, "--train-iters", "10", "--eval-interval", "2", "--eval-iters", "1",
                      "--save", save, "--save-best-k", "2", "--keep-last-n-checkpoints", "1")
    run_distributed(1, _scripted_validation, argv)
    assert sorted(t for t in os.listdir(save) if t.startswith("global_step")) == [
        "global_step10", "global_step4", "global_step8"]
    with open(os.path.join(save, "global_step8", tags.MANIFEST)) as f:
        assert json.load(f)["validation_loss"] == 2.0
    assert open(os.path.join(save, "best")).read() == "global_step8"
    (printed,) = run_distributed(1, _resume, train_argv(data_prefix, "--train-iters", "10", "--load", save,
                                                        "--load-tag", "best", "--eval-iters", "0"))
    assert "global_step8" in printed and " iteration        9/" in printed and " iteration        8/" not in printed
