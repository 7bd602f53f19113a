"""A run saved at one layout resumes at another with its optimizer: trained 10 iterations at TP=2,
PP=2, 2 ranks ZeRO-3 and one process, resumed at one process, TP=2, 2 ranks ZeRO-1, 2 ranks ZeRO-2 and
2 ranks ZeRO-3 for 10 more, iterations 11-20 log the unbroken one-process run's losses, and the fp32 weights and
Adam moments the resumed engine holds are the saving engine's, merged over its tensor-parallel ranks
and pipeline stages and cut for the new layout, exactly (a vocabulary padded for another
tensor-parallel size loses or gains padding rows, zeros). Dropout is off: two layouts draw different
dropout masks by design, so only then do their losses compare."""

import os
import sys

import pytest
import torch

from distributed import run_distributed
from gpt2_runs import ITERS, train_argv

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))
pytestmark = pytest.mark.distributed  # multi-rank training runs: left out of `pytest -m "not distributed"`

HALF = ITERS // 2
KEYS = ("fp32", "exp_avg", "exp_avg_sq")


def _engine_states(engine, args):
    """{GPT2Model name: {fp32 weight, exp_avg, exp_avg_sq}} of this rank's parameters (full over the
    data-parallel ranks), read from the engine as DeepSpeed exposes them."""
    from deepspeed.utils import safe_get_full_fp32_param, safe_get_full_optimizer_state

    from deepspeed_internals import ensure_optimizer_states
    from model.gpt2_pipeline import gpt2_name_of_pipeline_parameter
    if hasattr(engine.optimizer, "_hp_optimizer_states_linked"):  # DeepSpeed's bf16 optimizer links its fragments
        engine.optimizer._hp_optimizer_states_linked = False  # before its first step, to no moments: again, to them
    ensure_optimizer_states(engine, KEYS[1:])
    states = {}
    for name, param in engine.module.named_parameters():
        if args.pipe_parallel_size > 1:
            name = gpt2_name_of_pipeline_parameter(name, args.num_layers)
        if hasattr(param, "ds_id") or hasattr(param, "_hp_mapping"):
            state = {"fp32": safe_get_full_fp32_param(param),
                     **{key: safe_get_full_optimizer_state(param, key) for key in KEYS[1:]}}
        else:  # ZeRO-0 fp32: the torch optimizer steps the parameter itself
            state = {"fp32": param.detach(), **{key: engine.optimizer.state[param][key] for key in KEYS[1:]}}
        states[name] = {key: value.detach().clone().float() for key, value in state.items()}
    return states


def _run_and_record(argv):
    """pretrain_gpt2.main on this rank, recording the engine's states as it saves and right after it
    loads. Returns ({iteration: lm loss}, {"saved": states, "loaded": states}, tensor rank)."""
    import mpu
    import pretrain_gpt2
    import training
    recorded, save, load = {}, training.save_checkpoint, training.load_checkpoint

    def recording_save(engine, args, *rest, **options):
        recorded["saved"] = _engine_states(engine, args)
        return save(engine, args, *rest, **options)

    def recording_load(engine, args):
        resumed = load(engine, args)
        recorded["loaded"] = _engine_states(engine, args)
        return resumed
    training.save_checkpoint, training.load_checkpoint = recording_save, recording_load
    try:
        history = pretrain_gpt2.main(argv)
    finally:
        training.save_checkpoint, training.load_checkpoint = save, load
    return {i: v["lm loss"] for i, v in history.items()}, recorded, mpu.get_model_parallel_rank()


def _merged(ranks, key):
    """One state per parameter: tensor-parallel shards merged, pipeline stages joined."""
    from model.tensor_parallel_state import merge_states
    by_tensor_rank = {}
    for _, recorded, tensor_rank in ranks:
        by_tensor_rank.setdefault(tensor_rank, {}).update(recorded[key])
    return {name: {k: merge_states([{name: by_tensor_rank[r][name][k]} for r in sorted(by_tensor_rank)])[name]
                   for k in KEYS} for name in by_tensor_rank[0]}


ODD_PADDING = ["--make-vocab-size-divisible-by", "7"]  # 258 ids: 259 rows at TP=1, lcm(7, 2) = 14: 266 at TP=2
CASES = {  # saved at (ranks, flags, micro batch) -> resumed at (ranks, flags, micro batch)
    "TP=2 -> one process": ((2, ["--model-parallel-size", "2", *ODD_PADDING], 8), (1, ODD_PADDING, 8)),
    "PP=2 -> TP=2": ((2, ["--pipe-parallel-size", "2", *ODD_PADDING], 8),
                     (2, ["--model-parallel-size", "2", *ODD_PADDING], 8)),
    "ZeRO-3 -> ZeRO-1": ((2, ["--zero-stage", "3"], 4), (2, ["--zero-stage", "1"], 4)),
    "one process -> 2 ranks ZeRO-2": ((1, [], 8), (2, ["--zero-stage", "2"], 4)),
    "TP=2 -> 2 ranks ZeRO-3": ((2, ["--model-parallel-size", "2"], 8), (2, ["--zero-stage", "3"], 4)),
}


@pytest.fixture(scope="module")
def unbroken(data_prefix):
    """The one-process run's losses over all iterations."""
    ranks = run_distributed(1, _run_and_record, train_argv(data_prefix))
    return ranks[0][0]


OFFLINE = "PP=2 -> TP=2"  # converted by scripts/convert_checkpoint.py --load --save first; the others on the fly


def _convert_offline(folder, converted, tensor_parallel):
    import convert_checkpoint
    for wrong, problem in ((folder, "another folder"), (converted, "does not split into 3")):
        with pytest.raises(SystemExit, match=problem):
            convert_checkpoint.main(["--load", folder, "--save", wrong, *(["--model-parallel-size", "3"] * (wrong != folder))])
    assert not os.path.exists(os.path.join(converted, f"global_step{HALF}"))
    convert_checkpoint.main(["--load", folder, "--save", converted, "--model-parallel-size", str(tensor_parallel)])
    assert sorted(os.listdir(converted)) == ["global_step10", "latest"]


@pytest.mark.parametrize("case", CASES)
def test_a_run_resumed_at_another_layout_is_the_unbroken_run(case, unbroken, tmp_path, data_prefix):
    (saving, saving_flags, saving_batch), (resuming, resuming_flags, resuming_batch) = CASES[case]
    folder = str(tmp_path / "checkpoints")
    saved = run_distributed(saving, _run_and_record, train_argv(
        data_prefix, "--exit-interval", str(HALF), "--save", folder, *saving_flags, batch_size=saving_batch))
    if case == OFFLINE:
        _convert_offline(folder, str(tmp_path / "converted"), 2)
        folder = str(tmp_path / "converted")
    resumed = run_distributed(resuming, _run_and_record, train_argv(
        data_prefix, "--load", folder, *resuming_flags, batch_size=resuming_batch))

    losses = resumed[0][0]
    assert sorted(losses) == list(range(HALF + 1, ITERS + 1))
    for iteration, loss in losses.items():
        assert abs(loss - unbroken[iteration]) < 1e-4, (iteration, loss, unbroken[iteration])
    before, after = _merged(saved, "saved"), _merged(resumed, "loaded")
    assert sorted(before) == sorted(after)
    for name in before:
        for key in KEYS:
            rows = min(before[name][key].size(0), after[name][key].size(0))  # the vocabulary's padding differs
            assert torch.equal(before[name][key][:rows], after[name][key][:rows]), (name, key)
            assert not after[name][key][rows:].any(), (name, key)
    vocabulary = (before["word_embeddings.weight"]["fp32"].size(0), after["word_embeddings.weight"]["fp32"].size(0))
    assert vocabulary == {"TP=2 -> one process": (266, 259), "PP=2 -> TP=2": (259, 266)}.get(case, vocabulary)
    assert os.path.isfile(os.path.join(folder, f"global_step{HALF}", "universal", "training_state.pt"))


def test_a_bf16_weights_checkpoint_resumes_under_autocast(tmp_path, data_prefix):
    """A checkpoint of DeepSpeed's bf16 optimizer at ZeRO-1 (--bf16-weights; every bf16 checkpoint before
    --bf16 meant autocast) resumes with --bf16 through its layout-free form: the fp32 master weights become the
    weights, the Adam moments carry over exactly, and the run goes on from there."""
    folder = str(tmp_path / "checkpoints")
    saved = run_distributed(1, _run_and_record, train_argv(data_prefix, "--exit-interval", str(HALF), "--save", folder,
                                                           "--bf16-weights", "--zero-stage", "1"))
    resumed = run_distributed(1, _run_and_record, train_argv(data_prefix, "--load", folder, "--bf16",
                                                             "--zero-stage", "1"))
    before, after = saved[0][1]["saved"], resumed[0][1]["loaded"]
    assert sorted(before) == sorted(after)
    for name in before:
        for key in KEYS:
            assert torch.equal(before[name][key], after[name][key]), (name, key)
    losses, last_saved = resumed[0][0], saved[0][0][HALF]
    assert sorted(losses) == list(range(HALF + 1, ITERS + 1))
    assert abs(losses[HALF + 1] - last_saved) < 0.1 * last_saved, (losses, last_saved)
    assert os.path.isfile(os.path.join(folder, f"global_step{HALF}", "universal", "training_state.pt"))
