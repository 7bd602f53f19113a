"""A mixture-of-experts checkpoint trained with its experts spread over 2 ranks is read for evaluation and
generation with every expert on each process: its logits equal the training engine's own on the same
tokens, evaluation gives the same loss on 1 and 2 processes, greedy generation starts with the engine's
argmax; asking for the experts spread is one line."""

import importlib
import json
import os
import sys

import pytest
import torch

from distributed import run_distributed
from gpt2_runs import train_argv, train_keeping_engine

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MOE = ["--num-experts", "4", "--moe-layers", "every:2", "--moe-capacity-factor", "4.0", "--train-iters", "4",
       "--moe-expert-parallel-size", "2", "--zero-stage", "2"]  # capacity 4x: no token dropped, at any batch


def _train_and_probe(argv, probe):
    _, engine = train_keeping_engine(argv)
    with torch.no_grad():
        return engine.module.eval()(torch.tensor(probe)).float()


def _gathered(argv, probe):
    from arguments import add_evaluation_args, get_args
    from inference import load_gpt2
    model, _ = load_gpt2(get_args(argv, extra_args=add_evaluation_args))
    with torch.no_grad():
        return model(torch.tensor(probe)).float()


def _main(script, argv):
    sys.path.insert(0, os.path.join(REPO, "scripts"))
    return importlib.import_module(script).main(argv)


@pytest.fixture(scope="module")
def moe_checkpoint(tmp_path_factory, data_prefix, sample_texts):
    root = tmp_path_factory.mktemp("moe")
    probe = [list(" ".join(text.split()).encode("ascii", "ignore")[:32]) for text in sample_texts[:2]]
    logits = run_distributed(2, _train_and_probe, train_argv(data_prefix, *MOE, "--save", str(root / "ckpt"),
                                                             batch_size=4), probe)
    assert torch.equal(logits[0], logits[1])  # the same tokens on both ranks, the experts spread over them
    return {"root": root, "save": str(root / "ckpt"), "probe": probe, "logits": logits[0]}


def test_gathered_experts_give_the_training_engines_logits(moe_checkpoint):
    (logits,) = run_distributed(1, _gathered, ["--load", moe_checkpoint["save"]], moe_checkpoint["probe"])
    assert torch.allclose(logits, moe_checkpoint["logits"], rtol=1e-5, atol=1e-5)


def test_evaluation_and_generation_of_a_moe_checkpoint(moe_checkpoint, data_prefix):
    argv = ["--load", moe_checkpoint["save"], "--data-path", data_prefix, "--webtext-eval", "--eval-iters", "3",
            "--batch-size", "2", "--seq-length", "32"]
    one, two = (run_distributed(world, _main, "run_gpt2_eval", argv)[0] for world in (1, 2))
    assert one["tokens"] == two["tokens"] and abs(one["loss"] - two["loss"]) <= 1e-5 * one["loss"]
    prompt_file = moe_checkpoint["root"] / "prompt.txt"
    prompt = bytes(moe_checkpoint["probe"][0]).decode()
    prompt_file.write_text(prompt + "\n", encoding="utf-8")
    output = moe_checkpoint["root"] / "samples.jsonl"
    run_distributed(1, _main, "generate_samples", ["--load", moe_checkpoint["save"], "--greedy", "--out-seq-length",
                                                    "4", "--sample-input-file", str(prompt_file),
                                                    "--sample-output-file", str(output)])
    (sample,) = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    vocabulary = 258
    assert sample["tokens"][0] == int(moe_checkpoint["logits"][0, -1, :vocabulary].argmax())


def test_spreading_the_experts_for_evaluation_is_one_line(moe_checkpoint):
    from gpt2_runs import expect_error
    line = run_distributed(1, expect_error, ["--load", moe_checkpoint["save"], "--data-path", "x", "--webtext-eval",
                                             "--moe-expert-parallel-size", "2"], "scripts.run_gpt2_eval")[0]
    assert "evaluation and generation hold every expert on each process" in line
