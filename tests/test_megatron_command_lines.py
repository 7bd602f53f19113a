"""Megatron-LM v0's README command lines run here as users have them, every flag kept (only values
changed: small shapes, local paths, gloo instead of nccl, --bf16 instead of --fp16 on the CPU): BERT and
GPT-2 pretraining, then wikitext, LAMBADA and webtext evaluation of the GPT-2 checkpoint by
--model-path; a transformers GPT-2 folder evaluates as its converted checkpoint does; BERT trains from
Google's TFRecord files."""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch
from test_megatron_flags import write_bert_tfrecords

from distributed import run_distributed
from initialize import UsageError

pytestmark = pytest.mark.distributed  # launches the entry scripts: left out of `pytest -m "not distributed"`

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPE = ["--num-layers", "2", "--hidden-size", "64", "--num-attention-heads", "2"]


def _run(cwd, script, *argv):
    result = subprocess.run([sys.executable, os.path.join(REPO, script), *argv], cwd=str(cwd), capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stdout


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, sample_texts):
    """A folder laid out as v0's users had it: the named corpus `wikipedia` under CORPORA_ROOT, a wikitext
    test file, a LAMBADA file and a webtext file."""
    root = tmp_path_factory.mktemp("v0")
    os.makedirs(root / "corpora" / "wikipedia")
    with open(root / "corpora" / "wikipedia" / "wikipedia.json", "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"text": text}) + "\n" for text in sample_texts[:1500])
    shutil.copy(root / "corpora" / "wikipedia" / "wikipedia.json", root / "webtext.json")
    with open(root / "wiki.test.tokens", "w", encoding="utf-8") as f:
        f.write("".join(f" = Entry {n} = \n \n {text[:300]} \n \n" for n, text in enumerate(sample_texts[2000:2010])))
    with open(root / "lambada_test.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"text": " ".join(text.split()[:25])}) + "\n" for text in sample_texts[2010:2050])
    os.environ["CORPORA_ROOT"] = str(root / "corpora")
    return root


@pytest.fixture(scope="module")
def gpt2_checkpoint(workdir):
    output = _run(workdir, "pretrain_gpt2.py", *SHAPE, "--batch-size", "4", "--seq-length", "64",
                  "--max-position-embeddings", "64", "--train-iters", "6", "--save", "checkpoints/gpt2_345m",
                  "--load", "checkpoints/gpt2_345m", "--resume-dataloader", "--train-data", "wikipedia",
                  "--lazy-loader", "--tokenizer-type", "GPT2BPETokenizer", "--cache-dir", "cache", "--split",
                  "949,50,1", "--distributed-backend", "gloo", "--lr", "0.00015", "--lr-decay-style", "cosine",
                  "--weight-decay", "1e-2", "--clip-grad", "1.0", "--warmup", ".01", "--checkpoint-activations",
                  "--bf16", "--log-interval", "3")
    assert re.search(r"iteration +6/ +6 \|.*lm loss: \S+", output), output[-2000:]
    assert os.path.isfile(workdir / "checkpoints" / "gpt2_345m" / "latest")
    return "checkpoints/gpt2_345m"


def test_v0_pretrain_bert_command_line(workdir):
    output = _run(workdir, "pretrain_bert.py", *SHAPE, "--batch-size", "4", "--seq-length", "64",
                  "--max-preds-per-seq", "10", "--max-position-embeddings", "64", "--train-iters", "6", "--save",
                  "checkpoints/bert_345m", "--load", "checkpoints/bert_345m", "--resume-dataloader", "--train-data",
                  "wikipedia", "--lazy-loader", "--tokenizer-type", "BertWordPieceTokenizer",
                  "--tokenizer-model-type", "bert-large-uncased", "--presplit-sentences", "--cache-dir", "cache",
                  "--split", "949,50,1", "--distributed-backend", "gloo", "--lr", "0.0001", "--lr-decay-style",
                  "linear", "--lr-decay-iters", "5", "--weight-decay", "1e-2", "--clip-grad", "1.0", "--warmup",
                  ".01", "--bf16", "--fp32-embedding", "--log-interval", "3")
    assert re.search(r"iteration +6/ +6 \|.*lm loss: \S+ \| nsp loss: \S+", output), output[-2000:]
    saved = torch.load(next((workdir / "checkpoints" / "bert_345m" / "global_step6").glob("mp_rank_00_model_states.pt")),
                       weights_only=False)
    assert saved["args"]["fp32_embedding"] and saved["args"]["tokenizer_model_type"] == "bert-large-uncased"
    assert saved["module"]["word_embeddings.weight"].size(0) >= 30522  # bert-large-uncased's vocabulary


@pytest.mark.parametrize("task, result", [([], r"wikitext \| loss \S+ \| ppl \S+ \| adjusted ppl"),
                                          (["--cloze-eval"], r"lambada \| accuracy \S+ \| correct \d+ \| total 40"),
                                          (["--webtext-eval"], r"webtext \| loss \S+ \| ppl \S+ \| tokens \d+")],
                         ids=["wikitext", "lambada", "webtext"])
def test_v0_run_gpt2_eval_command_lines(workdir, gpt2_checkpoint, task, result):
    data = {"": "wiki.test.tokens", "--cloze-eval": "lambada_test.jsonl", "--webtext-eval": "webtext.json"}
    output = _run(workdir, "scripts/run_gpt2_eval.py", "--model-parallel-size", "1", *SHAPE, "--model-path",
                  gpt2_checkpoint, "--data-path", data["".join(task)], "--batch-size", "16", "--cache-dir", "cache",
                  *task)
    assert re.search(result, output.strip().splitlines()[-1]), output[-2000:]


def _evaluate_both(argvs):
    import importlib.util

    import mpu
    spec = importlib.util.spec_from_file_location("run_gpt2_eval", os.path.join(REPO, "scripts", "run_gpt2_eval.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from arguments import add_evaluation_args, get_args
    results = []
    for argv in argvs:
        try:
            results.append(module.evaluate(get_args(argv, extra_args=add_evaluation_args)))
        except UsageError as error:
            results.append(str(error))
        mpu.destroy_model_parallel()
    return results


def test_model_path_takes_a_transformers_folder(workdir, tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_positions=64, n_embd=64, n_layer=2, n_head=2, n_inner=96)).save_pretrained(
        tmp_path / "hf")
    subprocess.run([sys.executable, os.path.join(REPO, "scripts", "convert_checkpoint.py"), "--from-hf",
                    str(tmp_path / "hf"), "--save", str(tmp_path / "converted")], check=True, capture_output=True)
    wiki = ["--data-path", str(workdir / "wiki.test.tokens"), "--batch-size", "4"]
    from_folder, from_checkpoint, mismatch = run_distributed(1, _evaluate_both, [
        ["--model-path", str(tmp_path / "hf"), *SHAPE, *wiki], ["--load", str(tmp_path / "converted"), *wiki],
        ["--model-path", str(tmp_path / "hf"), "--num-layers", "3", *wiki]])[0]
    assert from_folder["loss"] == pytest.approx(from_checkpoint["loss"], rel=1e-6)
    assert from_folder["tokens"] == from_checkpoint["tokens"]
    assert "--num-layers 3 but the checkpoint at" in mismatch and "has 2" in mismatch


def test_bert_trains_from_google_tfrecords(tmp_path):
    for name, seed in (("part-0.tfrecord", 0), ("part-1.tfrecord", 1)):
        write_bert_tfrecords(tmp_path / name, 64, seq_length=32, max_predictions=5, seed=seed)
    output = _run(tmp_path, "pretrain_bert.py", *SHAPE, "--batch-size", "8", "--seq-length", "32",
                  "--train-iters", "30", "--use-tfrecords", "--train-data", "part-0.tfrecord", "part-1.tfrecord",
                  "--tokenizer-type", "BertWordPieceTokenizer", "--tokenizer-model-type", "bert-base-uncased",
                  "--lr", "3e-3", "--warmup", "0.1", "--log-interval", "10", "--eval-interval", "30",
                  "--eval-iters", "2", "--split", "80,10,10", "--hidden-dropout", "0", "--attention-dropout", "0")
    losses = [float(x) for x in re.findall(r"iteration +\d+/ +30 \|.*?lm loss: (\S+)", output)]
    assert len(losses) == 3 and losses[-1] < losses[0] - 0.5, output[-2000:]
    assert "validation loss at iteration 30" in output
