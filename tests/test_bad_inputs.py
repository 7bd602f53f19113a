"""A matrix of bad inputs: each stops with one clear line (what, where, what to do) and a non-zero
exit, and leaves what was already written as it was (a checkpoint folder, a dataset, an output
prefix)."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from data_utils.indexed_dataset import IndexedDatasetBuilder
from distributed import run_distributed
from gpt2_runs import expect_error, train, train_argv

pytestmark = pytest.mark.distributed  # runs the entry scripts: left out of `pytest -m "not distributed"`

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _snapshot(folder):
    """Every file below `folder` with its size and modification time."""
    return {os.path.join(root, name): (os.path.getsize(os.path.join(root, name)),
                                       os.path.getmtime(os.path.join(root, name)))
            for root, _, names in os.walk(folder) for name in names}


@pytest.fixture(scope="module")
def world(tmp_path_factory, data_prefix):
    """A finished 2-iteration checkpoint (tiny model, hidden 64) and a copy of the data to spoil."""
    root = tmp_path_factory.mktemp("bad-inputs")
    saved = str(root / "saved")
    run_distributed(1, train, train_argv(data_prefix, "--train-iters", "2", "--save", saved))
    return root, saved


def _bad(root, name, text):
    path = root / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def _spoilt_data(root, data_prefix, name, spoil):
    prefix = str(root / name)
    for suffix in (".bin", ".idx"):
        shutil.copy(data_prefix + suffix, prefix + suffix)
    spoil(prefix)
    return prefix


def _truncate(path, keep):
    with open(path, "r+b") as f:
        f.truncate(keep)


def _idx_version(prefix):
    with open(prefix + ".idx", "r+b") as f:
        f.seek(9)
        f.write((7).to_bytes(8, "little"))


def _large_ids(prefix):
    for suffix in (".bin", ".idx"):
        os.remove(prefix + suffix)
    builder = IndexedDatasetBuilder(prefix, np.int32)
    for _ in range(40):
        builder.add_document([np.arange(50200, 50300, dtype=np.int32)])
    builder.finalize()


def _training_cases(root, saved, data):
    """{case: (argv, the line's expected fragment)} for pretrain_gpt2 on one rank."""
    return {
        "fp16 on CPU": (["--fp16"], "--fp16: DeepSpeed does not support fp16 on the CPU accelerator"),
        "batch does not divide": (["--batch-size", "4", "--deepspeed_config", _bad(root, "batch.json",
                                  '{"train_batch_size": 10, "train_micro_batch_size_per_gpu": 4}')],
                                  "train_batch_size 10 is not divisible by micro batch 4"),
        "ds_config not JSON": (["--deepspeed_config", _bad(root, "broken.json", '{"train_batch_size": ')],
                               "broken.json"),
        "ds_config misspelt key": (["--deepspeed_config", _bad(root, "misspelt.json", json.dumps(
            {"zero_optimization": {"stage": 1, "reduce_bucket_sizee": 500}}))], "reduce_bucket_size"),
        "inconsistent batch flags": (["--global-batch-size", "16", "--gradient-accumulation-steps", "3"],
                                     "--global-batch-size 16 != --batch-size 8 x data-parallel size 1 x "
                                     "--gradient-accumulation-steps 3: give two of the three"),
        "heads do not divide over TP": (["--num-attention-heads", "2", "--model-parallel-size", "4"],
                                        "--num-attention-heads 2 is not divisible by --model-parallel-size 4"),
        "layers do not divide over PP": (["--num-layers", "3", "--pipe-parallel-size", "2"],
                                         "--num-layers 3 does not split over --pipe-parallel-size 2"),
        "missing vocab file": (["--tokenizer-type", "GPT2BPETokenizer", "--vocab-file", str(root / "nowhere.json"),
                                "--merge-file", str(root / "x.txt")],
                               "nowhere.json is not a file"),
        "corrupt merges file": (["--tokenizer-type", "GPT2BPETokenizer",
                                 "--vocab-file", _bad(root, "vocab.json", '{"a": 0}'),
                                 "--merge-file", _bad(root, "merges.txt", "#version: 0.2\nq q q\n")],
                                "do not form one GPT-2 BPE vocabulary"),
        "corrupt SentencePiece model": (["--tokenizer-type", "SentencePieceTokenizer", "--tokenizer-path",
                                         _bad(root, "broken.model", "not a model")], "broken.model"),
        "truncated .bin": (["--data-path", _spoilt_data(root, data, "truncated", lambda p: _truncate(p + ".bin", 1000))],
                           "truncated.bin"),
        ".idx of another version": (["--data-path", _spoilt_data(root, data, "version", _idx_version)],
                                    "index version 7"),
        "token id beyond the vocabulary": (["--data-path", _spoilt_data(root, data, "large", _large_ids)],
                                           "is outside the vocabulary [0, 258)"),
        "missing data": (["--data-path", str(root / "absent_text_document")], "absent_text_document"),
        "--load of a folder that is not a checkpoint": (["--load", str(root)], "is not a checkpoint directory"),
        "checkpoint of another shape": (["--load", saved, "--hidden-size", "128", "--train-iters", "4"],
                                        "does not fit the model the flags describe"),
        "finished checkpoint": (["--load", saved, "--train-iters", "2"], "nothing to train"),
        "--save that cannot be written": (["--save", str(root / "vocab.json" / "ckpt")],
                                          "vocab.json/ckpt: this folder cannot be written (Not a directory)"),
    }


def _training_body(root, saved, data):
    messages = {}
    for case, (extra, _) in _training_cases(root, saved, data).items():
        try:
            messages[case] = expect_error(train_argv(data, "--save", saved, *extra))
        except BaseException as error:  # noqa: B036  (a case that does not stop cleanly is reported with the rest)
            messages[case] = f"did not stop with one error line: {str(error)[-1500:]}"
    return messages


def test_bad_training_inputs_are_one_line_each(world, data_prefix):
    root, saved = world
    before = _snapshot(saved)
    messages = run_distributed(1, _training_body, root, saved, data_prefix)[0]
    wrong = {case: messages[case] for case, (_, fragment) in _training_cases(root, saved, data_prefix).items()
             if fragment not in messages[case]}
    assert not wrong, "\n\n".join(f"{case}: {message}" for case, message in wrong.items())
    assert _snapshot(saved) == before, "the checkpoint folder must be as it was"


def _two_rank_body(saved, data):
    return (expect_error(train_argv(data, "--model-parallel-size", "4", "--num-attention-heads", "4")),
            expect_error(train_argv(data, "--model-parallel-size", "2", "--num-layers", "3", "--load", saved, "--save",
                                    saved)))


def test_layouts_that_do_not_fit_the_world_or_the_checkpoint(world, data_prefix):
    _, saved = world
    before = _snapshot(saved)
    world_size, layout = run_distributed(2, _two_rank_body, saved, data_prefix)[0]
    assert "world size 2 is not divisible by --model-parallel-size 4" in world_size
    # another layout is resumed through the checkpoint's layout-free form, written beside its files
    assert "has no transformer.layers.2.attention_layernorm.weight: it is a checkpoint of another model" in layout
    after = _snapshot(saved)
    assert {path: after.get(path) for path in before} == before
    assert after.keys() - before.keys() and all(f"{os.sep}universal{os.sep}" in path for path in after.keys() - before.keys())


def _full_disk_body(data, save):
    """torch.save fails as on a full disk while the checkpoint of iteration 4 is written."""
    import errno

    import torch
    original = torch.save

    def failing(obj, path, *args, **kwargs):
        if "global_step4" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return original(obj, path, *args, **kwargs)
    torch.save = failing
    try:
        return expect_error(train_argv(data, "--train-iters", "4", "--save", save, "--save-interval", "2"))
    finally:
        torch.save = original


def test_a_disk_that_fills_during_a_save(tmp_path, data_prefix):
    save = str(tmp_path / "ckpt")
    message = run_distributed(1, _full_disk_body, data_prefix, save)[0]
    assert "No space left on device" in message and "global_step2" in message, message
    with open(os.path.join(save, "latest")) as f:
        assert f.read() == "global_step2", "the last complete checkpoint stays the one to resume from"


def _preprocess(*flags):
    return subprocess.run([sys.executable, os.path.join(REPO, "scripts", "preprocess_data.py"), *flags],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("case", ["malformed line", "missing key", "empty corpus"])
def test_bad_corpora_stop_preprocessing(case, tmp_path):
    lines = {"malformed line": ['{"text": "one"}', '{"text": "two"}', '{"text": "unterminated'],
             "missing key": ['{"body": "one"}'], "empty corpus": []}[case]
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    existing = tmp_path / "out_text_document.bin"
    existing.write_bytes(b"from an earlier run")
    result = _preprocess("--input", str(corpus), "--output-prefix", str(tmp_path / "out"), "--workers", "1")
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert result.returncode != 0 and len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    expected = {"malformed line": "c.jsonl:3: not valid JSON", "missing key": "c.jsonl:1: no 'text' key",
                "empty corpus": "c.jsonl"}[case]
    assert expected in errors[0], errors[0]
    assert existing.read_bytes() == b"from an earlier run", "an earlier output is not clobbered"


def _readers_body(directory, data, hf_dir):
    """Evaluation, generation and conversion of `directory` on this rank: {reader: (exit code, stderr)}."""
    import contextlib
    import importlib.util
    import io

    import mpu

    def script(name):
        spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "scripts", f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    runs = {"evaluation": lambda: script("run_gpt2_eval").main(["--load", directory, "--data-path", data,
                                                                "--webtext-eval", "--eval-iters", "1"]),
            "generation": lambda: importlib.import_module("generate_samples").main(
                ["--load", directory, "--greedy", "--out-seq-length", "2", "--sample-input-file", os.devnull]),
            "conversion": lambda: script("convert_checkpoint").main(["--load", directory, "--to-hf", hf_dir])}
    results = {}
    for name, run in runs.items():
        stderr = io.StringIO()
        mpu.destroy_model_parallel()
        with contextlib.redirect_stderr(stderr):
            try:
                run()
                code = 0
            except SystemExit as stopped:
                code = stopped.code
                if isinstance(code, str):  # sys.exit("error: ...")
                    stderr.write(code + "\n")
        results[name] = (code, stderr.getvalue())
    return results


def test_a_truncated_checkpoint_is_passed_over_or_one_line_wherever_it_is_read(world, tmp_path, data_prefix):
    """Training passes over a tag whose files do not match its manifest; evaluation, generation and
    conversion verify the same way: they read the newest complete tag, saying which was passed over, and
    with none complete they stop with one line (no torch traceback)."""
    import glob
    _, saved = world
    directory = tmp_path / "ckpt"
    shutil.copytree(saved, directory)
    shutil.copytree(directory / "global_step2", directory / "global_step1")  # an older complete tag
    (states,) = glob.glob(str(directory / "global_step2" / "mp_rank_*_model_states.pt"))
    _truncate(states, os.path.getsize(states) // 2)
    results = run_distributed(1, _readers_body, str(directory), data_prefix, str(tmp_path / "hf"))[0]
    for reader, (code, stderr) in results.items():
        assert code in (0, None) and "checkpoint global_step2 is incomplete" in stderr and "global_step1" in stderr, \
            f"{reader}: {stderr[-2000:]}"
    (states,) = glob.glob(str(directory / "global_step1" / "mp_rank_*_model_states.pt"))
    _truncate(states, os.path.getsize(states) // 2)
    results = run_distributed(1, _readers_body, str(directory), data_prefix, str(tmp_path / "hf2"))[0]
    for reader, (code, stderr) in results.items():
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert code not in (0, None) and "Traceback" not in stderr, f"{reader}: {stderr[-2000:]}"
        errors = [line for line in lines if line.startswith("error:")]
        assert errors == lines[-1:] and "no complete checkpoint" in lines[-1], f"{reader}: {stderr[-2000:]}"
    assert not os.path.exists(tmp_path / "hf2" / "config.json")


def test_data_too_small_for_a_split_stops_every_rank_with_one_line(tmp_path, sample_texts, bert_vocab_file):
    """Megatron-LM v0's BERT line (--split 949,50,1) on a corpus of 30 documents leaves the test split no
    document: rank 0 finds it while building the datasets, and both ranks stop with its one line (the
    other rank must not wait for rank 0 at the barrier, nor print a traceback)."""
    corpus = tmp_path / "small.jsonl"
    corpus.write_text("".join(json.dumps({"text": text}) + "\n" for text in sample_texts[:30]), encoding="utf-8")
    argv = ["--model-size", "tiny", "--seq-length", "64", "--batch-size", "2", "--train-iters", "2",
            "--train-data", str(corpus), "--data-cache-dir", str(tmp_path), "--split", "949,50,1",
            "--tokenizer-type", "BertWordPieceLowerCase", "--vocab-file", bert_vocab_file]
    for line in run_distributed(2, expect_error, argv, "pretrain_bert"):
        assert "--split 949,50,1: the test split of" in line and "give that split a larger weight" in line, line
