"""scripts/run_gpt2_eval.py on a trained ZeRO-3 checkpoint equals the same windows scored directly with
transformers (after converting the checkpoint): wikitext loss, LAMBADA accuracy (default and strict),
large-corpus loss; at TP=1, TP=2 and two data-parallel ranks; clear errors for bad input."""

import importlib.util
import json
import math
import os
import re
import subprocess
import sys

import pytest
import torch

import mpu
from checkpointing import write_checkpoint
from data_utils.tokenization import make_tokenizer
from distributed import run_distributed
from gpt2_runs import train, train_argv
from initialize import UsageError
from tasks.corpus import corpus_tokens
from tasks.lambada import cloze_sample, cloze_window, read_passages
from tasks.wikitext import evaluation_windows, wikitext_detokenize

pytestmark = pytest.mark.distributed  # multi-rank training runs: left out of `pytest -m "not distributed"`

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "scripts", "run_gpt2_eval.py")
SEQ = 32  # the positions of train_argv's model


def _script_module(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "scripts", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def files(tmp_path_factory, gpt2_data_prefix, sample_texts):
    """A checkpoint trained under ZeRO-3 and a random transformers GPT-2 converted here, each with its
    transformers form; a wikitext-style file and a LAMBADA file cut from the real bundled text. Every
    other LAMBADA passage repeats its last word: a random GPT-2 leans towards repeating its input, so
    the untrained model gets some of those right and the accuracy is neither 0 nor 1."""
    from transformers import GPT2Config, GPT2LMHeadModel
    root = tmp_path_factory.mktemp("eval")
    paths = {name: str(root / name) for name in ("trained", "trained-hf", "random", "random-hf")}
    run_distributed(1, train, train_argv(gpt2_data_prefix, "--zero-stage", "3", "--save", paths["trained"],
                                         "--train-iters", "10", tokenizer="GPT2BPETokenizer"))
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_positions=SEQ, n_embd=64, n_layer=2, n_head=4)).save_pretrained(paths["random-hf"])
    convert = _script_module("convert_checkpoint")  # in this process: a subprocess would import torch again
    convert.main(["--load", paths["trained"], "--to-hf", paths["trained-hf"]])
    convert.main(["--from-hf", paths["random-hf"], "--save", paths["random"]])
    paths["wikitext"], paths["lambada"] = str(root / "wiki.test.tokens"), str(root / "lambada_test.jsonl")
    with open(paths["wikitext"], "w", encoding="utf-8") as f:
        f.write("".join(f" {text[:400]} \n \n" for text in sample_texts[:6]))
    with open(paths["lambada"], "w", encoding="utf-8") as f:
        for number, text in enumerate(sample_texts[:80]):
            words = text.split()[:30]
            f.write(json.dumps({"text": " ".join(words + words[-1:] if number % 2 else words)}) + "\n")
    return paths


def _reference(hf_dir, windows):
    """Summed loss of the scored targets and windows whose scored targets are all argmax, by transformers,
    one window at a time."""
    from transformers import GPT2LMHeadModel
    model = GPT2LMHeadModel.from_pretrained(hf_dir, local_files_only=True).eval()
    loss, correct = 0.0, 0
    with torch.no_grad():
        for inputs, targets, scored in windows:
            logits = model(input_ids=torch.tensor([inputs])).logits[0]
            picked = torch.tensor(scored)
            loss += torch.nn.functional.cross_entropy(logits[picked], torch.tensor(targets)[picked], reduction="sum").item()
            correct += int(torch.equal(logits[picked].argmax(-1), torch.tensor(targets)[picked]))
    return loss, correct


def _run_tasks(argvs, tensor_parallel):
    module = _script_module("run_gpt2_eval")
    results = []
    for argv in argvs:
        results.append(module.main(argv + ["--model-parallel-size", str(tensor_parallel)]))
        mpu.destroy_model_parallel()
    return results


@pytest.fixture(scope="module")
def expected(files, gpt2_data_prefix):
    tokenizer = make_tokenizer("GPT2BPETokenizer")
    with open(files["wikitext"], encoding="utf-8") as f:
        wiki_tokens = tokenizer.tokenize(wikitext_detokenize(f.read()))
    wiki_loss, _ = _reference(files["trained-hf"], evaluation_windows(wiki_tokens, SEQ, 8))
    web_tokens = corpus_tokens(gpt2_data_prefix, tokenizer, 3 * 4 * SEQ + 1)
    web_loss, _ = _reference(files["trained-hf"], evaluation_windows(web_tokens, SEQ))
    passages = read_passages(files["lambada"])
    correct = {strict: _reference(files["random-hf"], [cloze_window(*cloze_sample(text, tokenizer, strict), SEQ)
                                                       for text in passages])[1] for strict in (False, True)}
    return {"wikitext": wiki_loss / (len(wiki_tokens) - 1), "tokens": len(wiki_tokens), "correct": correct[False],
            "strict": correct[True], "total": len(passages), "webtext": web_loss / (len(web_tokens) - 1)}


@pytest.mark.parametrize("world, tensor_parallel", [(1, 1), (2, 2), (2, 1)], ids=["1 rank", "TP=2", "DP=2"])
def test_eval_equals_transformers_on_the_same_windows(files, gpt2_data_prefix, expected, world, tensor_parallel):
    trained, random = ["--load", files["trained"], "--batch-size", "4"], ["--load", files["random"], "--batch-size", "4"]
    argvs = [trained + ["--data-path", files["wikitext"], "--overlapping-eval", "8"],
             random + ["--data-path", files["lambada"], "--cloze-eval"],
             random + ["--data-path", files["lambada"], "--cloze-eval", "--strict-lambada"],
             trained + ["--data-path", gpt2_data_prefix, "--webtext-eval", "--eval-iters", "3"]]
    wiki, cloze, strict, web = run_distributed(world, _run_tasks, argvs, tensor_parallel)[0]
    assert wiki["tokens"] == expected["tokens"]
    assert wiki["loss"] == pytest.approx(expected["wikitext"], rel=1e-5)
    assert wiki["ppl"] == pytest.approx(math.exp(expected["wikitext"]), rel=1e-4)
    assert (cloze["correct"], cloze["total"]) == (expected["correct"], expected["total"])
    assert (strict["correct"], strict["total"]) == (expected["strict"], expected["total"])
    assert web["loss"] == pytest.approx(expected["webtext"], rel=1e-5)
    assert 0 < expected["correct"] < expected["total"], "the LAMBADA check needs some right and some wrong"


def test_command_line_prints_one_summary_line_and_writes_json(files, tmp_path):
    output = tmp_path / "result.json"
    result = subprocess.run([sys.executable, SCRIPT, "--load", files["trained"], "--data-path", files["wikitext"],
                             "--output-file", str(output)], capture_output=True, text=True, cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip().splitlines()[-1]
    match = re.fullmatch(r"wikitext \| loss (\S+) \| ppl (\S+) \| adjusted ppl (\S+) \| tokens (\d+) \| words (\d+)", line)
    assert match, line
    written = json.loads(output.read_text())
    assert written["task"] == "wikitext" and int(match.group(4)) == written["tokens"]
    assert float(match.group(1)) == pytest.approx(written["loss"], abs=1e-4)
    words = written["words"]
    assert float(match.group(3)) == pytest.approx(math.exp(written["loss"] * (written["tokens"] - 1) / (words - 1)),
                                                 rel=1e-3)


def _usage_error(argv):
    from arguments import add_evaluation_args, get_args
    try:
        _script_module("run_gpt2_eval").evaluate(get_args(argv, extra_args=add_evaluation_args))
    except UsageError as error:
        return str(error)
    return None


def test_bad_input_is_one_clear_error(files, tmp_path):
    bert = str(tmp_path / "bert")
    write_checkpoint(bert, [{"tokentype_embeddings": torch.zeros(2, 4)}], {"model_type": "bert"})
    wiki = ["--data-path", files["wikitext"]]
    cases = {"--load CKPT_DIR is required": wiki,
             "a BERT checkpoint": ["--load", bert] + wiki,
             "--seq-length 64 is longer than the model's 32 positions": ["--load", files["trained"], "--seq-length", "64"]
             + wiki,
             "--strict-lambada changes how --cloze-eval scores": ["--load", files["trained"], "--strict-lambada"] + wiki,
             "--num-layers 3 but the checkpoint at": ["--load", files["trained"], "--num-layers", "3"] + wiki}
    messages = run_distributed(1, _errors, list(cases.values()))[0]
    for (expected_text, _), message in zip(cases.items(), messages):
        assert message and expected_text in message, (expected_text, message)


def _errors(argvs):
    messages = []
    for argv in argvs:
        messages.append(_usage_error(argv))
        mpu.destroy_model_parallel()
    return messages
