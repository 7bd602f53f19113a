"""Every declared flag is read somewhere (a flag parsed and never used is a silent lie), and --help reads."""

import argparse
import glob
import importlib.util
import os
import re

import pytest

import arguments
import trackers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _our_actions():
    parser = argparse.ArgumentParser()
    for add in (arguments.add_model_args, arguments.add_architecture_args, arguments.add_regularization_args, arguments.add_training_args,
                arguments.add_initialization_args, arguments.add_learning_rate_args, arguments.add_checkpointing_args,
                arguments.add_mixed_precision_args, arguments.add_distributed_args, arguments.add_validation_args,
                arguments.add_data_args, arguments.add_bert_args, arguments.add_tokenizer_args,
                arguments.add_evaluation_args, arguments.add_generation_args, arguments.add_lm_harness_args,
                trackers.add_tracking_args, arguments.add_refused_flags):
        add(parser)
    return [a for a in parser._actions if a.option_strings and a.dest != "help"]


def _source_without_declarations():
    patterns = ("*.py", "checkpointing/*.py", "model/*.py", "data_utils/*.py", "mpu/*.py", "scripts/*.py", "tasks/*.py")
    files = [f for pattern in patterns
             for f in glob.glob(os.path.join(REPO, pattern))]
    text = "\n".join(open(f, encoding="utf-8").read() for f in files)
    return re.sub(r"add_argument\((?:[^()]|\([^()]*\))*\)", "", text)


@pytest.mark.parametrize("action", _our_actions(), ids=lambda a: a.option_strings[0])
def test_every_flag_is_read(action):
    source = _source_without_declarations()
    used = re.search(rf"args\.{action.dest}\b", source) or any(f'"{flag}"' in source for flag in action.option_strings)
    assert used, f"{action.option_strings[0]} is declared but never read"


def test_help_lists_the_groups(capsys):
    with pytest.raises(SystemExit):
        arguments.get_args(["--help"])
    text = capsys.readouterr().out
    for group in ("model:", "regularization:", "training:", "learning rate:", "checkpointing:", "mixed precision:",
                  "distributed:", "validation:", "data:", "BERT:", "tokenizer:", "DeepSpeed:"):
        assert group in text, group


def test_names_from_later_megatron_mean_ours():
    """Megatron-LM / Megatron-DeepSpeed spellings land in the same settings as ours."""
    theirs = arguments.get_args(["--tensor-model-parallel-size", "2", "--pipeline-model-parallel-size", "2",
                                 "--micro-batch-size", "3", "--lr-warmup-fraction", "0.2", "--cache-dir", "c",
                                 "--num-layers", "4", "--num-attention-heads", "4", "--hidden-size", "64"])
    ours = arguments.get_args(["--model-parallel-size", "2", "--pipe-parallel-size", "2", "--batch-size", "3",
                               "--warmup", "0.2", "--data-cache-dir", "c", "--num-layers", "4",
                               "--num-attention-heads", "4", "--hidden-size", "64"])
    assert vars(theirs) == vars(ours)


def test_presets_and_explicit_flags():
    args = arguments.get_args(["--model-size", "gpt2-350m", "--num-layers", "3", "--seq-length", "64"])
    assert (args.num_layers, args.hidden_size, args.num_attention_heads) == (3, 1024, 16)
    assert args.max_position_embeddings == 64 and args.lr_decay_iters == args.train_iters
    assert {"model_size", "num_layers", "seq_length"} <= args.explicit and "lr" not in args.explicit


@pytest.mark.parametrize("argv, words", [
    (["--trian-iters", "5"], ["unrecognized arguments: --trian-iters 5", "did you mean --train-iters?"]),
    (["--lr", "1", "--zero-stagee=1"], ["did you mean --zero-stage?"]),
    (["--no-bias-gelu-fusion"], ["--no-bias-gelu-fusion: bias and GeLU are not fused"]),
    (["--check-dataset"], ["python scripts/check_dataset.py --data-path"]),
    (["--wandb-name", "x"], ["--wandb-name is for a wandb run: add --wandb-project"]),
    (["--mlflow-experiment", "x"], ["--mlflow-experiment is for an MLflow run: add --mlflow-tracking-uri"]),
])
def test_a_misspelt_or_refused_flag_is_one_line(capsys, argv, words):
    """No usage block (--help has it): one line, with the closest flag or the reason."""
    with pytest.raises(SystemExit) as stopped:
        arguments.get_args(argv)
    assert stopped.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert all(word in line for word in words), line


@pytest.mark.parametrize("argv, package, words", [
    (["--wandb-project", "p"], "wandb", "--wandb-project: wandb is not installed: pip install wandb"),
    (["--mlflow-tracking-uri"], "mlflow", "--mlflow-tracking-uri: MLflow is not installed: pip install mlflow-skinny"),
])
def test_a_tracker_not_installed_is_one_line_before_anything_runs(capsys, monkeypatch, argv, package, words):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *rest: None if name == package else find_spec(name, *rest))
    with pytest.raises(SystemExit) as stopped:
        arguments.get_args(argv)
    assert stopped.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert words in line, line
