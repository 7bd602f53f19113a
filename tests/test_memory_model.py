"""memory_model.py against what runs: its parameter count is the built model's; on 2 CPU ranks its per-rank
model-state bytes are within 5% of the tensors the engine holds (ZeRO 0-3, TP 1 and 2) and the predicted
peak that pretrain_gpt2.py prints within 15% of the peak it then measures (the process's resident peak) at
two model sizes, one whose model states outweigh its activations and one the other way round; a launch
predicted over --device-memory stops before the model is built, with a line naming what fits;
scripts/plan_layout.py's table holds only layouts that fit."""

import contextlib
import importlib
import io
import json
import os
import re
import sys

import pytest

from data_utils.tokenization import padded_vocab_size
from distributed import run_distributed, run_distributed_fresh
from gpt2_runs import expect_error, train_argv
from memory_model import Buckets, Layout, Shape, fitting_layouts, flags_for, model_states, parameters, predicted_peak

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _built_parameters(shape_flags):
    from arguments import get_args
    from model import GPT2Model
    from model.architecture import architecture_from_args
    from training import count_parameters
    args = get_args(shape_flags)
    model = GPT2Model(num_layers=args.num_layers, vocab_size=512, hidden_size=args.hidden_size,
                      num_attention_heads=args.num_attention_heads, max_sequence_length=args.max_position_embeddings,
                      embedding_dropout=0.0, attention_dropout=0.0, hidden_dropout=0.0,
                      layernorm_epsilon=1e-5, ffn_hidden_size=args.ffn_hidden_size,
                      architecture=architecture_from_args(args), parallel_output=True)
    return count_parameters(model)


@pytest.mark.parametrize("layers, hidden, heads, ffn, positions", [(2, 64, 2, 256, 32), (3, 96, 4, 160, 64)])
def test_the_parameter_count_is_the_built_models(layers, hidden, heads, ffn, positions):
    flags = ["--num-layers", str(layers), "--hidden-size", str(hidden), "--num-attention-heads", str(heads),
             "--ffn-hidden-size", str(ffn), "--max-position-embeddings", str(positions), "--seq-length", str(positions)]
    (built,) = run_distributed(1, _initialized_then, _built_parameters, flags)
    assert parameters(Shape(layers, hidden, heads, ffn, 512, positions, positions)) == built


def _initialized_then(function, *args):
    import mpu
    mpu.initialize_model_parallel(1)
    return function(*args)


def _measured_states(argv):
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    import memory
    return memory._measure_stage(argv)


@pytest.mark.parametrize("tensor, stage", [(1, 1), (2, 3)])
def test_model_states_are_what_the_engine_holds(data_prefix, tensor, stage):
    """The full matrix (ZeRO 0-3 x TP 1/2) is the slow tier's (test_model_states_every_layout)."""
    _check_states(data_prefix, tensor, stage)


@pytest.mark.slow
@pytest.mark.parametrize("tensor", [1, 2])
@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_model_states_every_layout(data_prefix, tensor, stage):
    _check_states(data_prefix, tensor, stage)


def _check_states(data_prefix, tensor, stage):
    argv = train_argv(data_prefix, "--model-size", "small", "--train-iters", "2", "--zero-stage", str(stage),
                      "--model-parallel-size", str(tensor), batch_size=4)
    measured = run_distributed(2, _measured_states, argv)[0]
    shape = Shape(4, 128, 4, 512, padded_vocab_size(258, 128, tensor), 32, 32)
    predicted = model_states(shape, Layout(tensor, 1, 2 // tensor, stage, 4, False, "fp32"))
    got = measured["parameters"] + measured["gradients"] + measured["optimizer"]
    want = sum(predicted.values())
    assert abs(got - want) <= 0.05 * want, (measured, predicted)


PEAK_SHAPES = {  # gpt2-124m's shape (bytes for a vocabulary): model states 5.6 times its activations; 6 x 256 at
    # sequence 512 with attention dropout (a CPU keeps the scores): activations 7 times its model states
    "gpt2-124m": ["--model-size", "gpt2-124m", "--seq-length", "128", "--batch-size", "2"],
    "6x256": ["--num-layers", "6", "--hidden-size", "256", "--num-attention-heads", "4", "--seq-length", "512",
              "--max-position-embeddings", "512", "--batch-size", "4"],
}
# glibc's malloc keeps freed blocks of up to 32 MB in its heaps (its mmap threshold rises to the largest
# block freed), which a resident peak then counts; a fixed threshold returns them as torch frees them
RETURN_FREED_MEMORY = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def _peak_lines(entry, argv):
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        importlib.import_module(entry).main(argv)
    return [line for line in printed.getvalue().splitlines() if "peak memory per rank" in line]


def _check_peak(argv, entry="pretrain_gpt2"):
    predicted_line, measured_line = run_distributed_fresh(2, _peak_lines, entry, argv,
                                                          environment=RETURN_FREED_MEMORY)[0]
    predicted = float(re.search(r"predicted peak memory per rank: ([\d,]+) MiB", predicted_line)[1].replace(",", ""))
    measured = float(re.search(r"measured peak memory per rank: ([\d,]+) MiB", measured_line)[1].replace(",", ""))
    assert abs(predicted - measured) <= 0.15 * measured, (predicted_line, measured_line)


def _layout_flags(tensor, stage, checkpointing=False):
    return ["--train-iters", "3", "--zero-stage", str(stage), "--model-parallel-size", str(tensor),
            *(["--checkpoint-activations"] if checkpointing else [])]


def test_the_predicted_peak_is_the_measured_one(data_prefix):
    """ZeRO-3 over 2 data-parallel ranks (gathered parameters, reduce-scatter buffers), activations the most;
    the slow tier has both sizes at ZeRO 0-3 x activation checkpointing x TP 1/2 (test_peak_every_layout)
    and BERT (test_bert_peak)."""
    _check_peak(train_argv(data_prefix, *PEAK_SHAPES["6x256"], *_layout_flags(1, 3), dropout=0.1))


@pytest.mark.slow
@pytest.mark.parametrize("shape", sorted(PEAK_SHAPES))
@pytest.mark.parametrize("tensor", [1, 2])
@pytest.mark.parametrize("checkpointing", [False, True])
@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_peak_every_layout(data_prefix, shape, tensor, checkpointing, stage):
    _check_peak(train_argv(data_prefix, *PEAK_SHAPES[shape], *_layout_flags(tensor, stage, checkpointing), dropout=0.1))


@pytest.mark.slow
@pytest.mark.parametrize("tensor", [1, 2])
@pytest.mark.parametrize("stage", [0, 3])
def test_bert_peak(bert_small_prefix, bert_small_vocab_file, tensor, stage):
    """pretrain_bert.py's prediction (its masked-LM head on --max-preds-per-seq positions)."""
    _check_peak([*PEAK_SHAPES["6x256"], *_layout_flags(tensor, stage), "--max-preds-per-seq", "80", "--log-interval",
                 "1", "--eval-iters", "0", "--data-path", bert_small_prefix, "--data-cache-dir",
                 os.path.dirname(bert_small_prefix), "--tokenizer-type", "BertWordPieceLowerCase", "--vocab-file",
                 bert_small_vocab_file, "--num-workers", "0"], entry="pretrain_bert")


@pytest.mark.parametrize("shape, layout, fits, flags", [
    # long sequences, one data-parallel rank (ZeRO partitions nothing): only recomputation helps
    (Shape(24, 1024, 16, 4096, 512, 8192, 8192), Layout(1, 1, 1, 0, 1, False, "bf16-weights"),
     Layout(1, 1, 1, 0, 1, True, "bf16-weights"), "--checkpoint-activations"),
    # short sequences, 8 data-parallel ranks: the least partitioning that fits
    (Shape(24, 2048, 16, 8192, 50304, 128, 128), Layout(1, 1, 8, 0, 1, False, "bf16-weights"),
     Layout(1, 1, 8, 1, 1, False, "bf16-weights"), "--zero-stage 1"),
    # a micro batch of 8 that fits at 2, accumulating 4 times as many (ds_configs/ds_zero1.json's bucket)
    (Shape(12, 768, 12, 3072, 50304, 1024, 1024), Layout(1, 1, 8, 1, 8, True, "bf16-weights", Buckets(50_000_000)),
     Layout(1, 1, 8, 1, 2, True, "bf16-weights", Buckets(50_000_000)), "--batch-size 2 --gradient-accumulation-steps 8"),
])
def test_the_layout_named_is_the_least_change_that_fits(shape, layout, fits, flags):
    limit = predicted_peak(shape, fits)["total"] + 1
    assert predicted_peak(shape, layout)["total"] > limit
    best, total = fitting_layouts(shape, layout, "gpu", limit)[0]
    assert total <= limit and best == fits and flags_for(best, layout, 2) == flags


def test_a_launch_over_device_memory_stops_before_the_model_is_built(data_prefix):
    line = run_distributed(1, expect_error, train_argv(data_prefix, "--device-memory", "1MB"))[0]
    assert "is predicted to peak at" in line and "over the 1 MiB of --device-memory" in line, line
    assert "--no-memory-check runs it anyway" in line


def test_the_plan_for_gpt2_1_3b_on_8_gpus(capsys):
    sys.path.insert(0, os.path.join(REPO, "scripts"))
    import plan_layout
    plan_layout.main(["--model-size", "gpt2-1.3b", "--seq-length", "2048", "--global-batch-size", "512",
                               "--bf16-weights", "--gpus", "8", "--gpu-memory", "40GB", "--json", "--why"])
    printed = json.loads(capsys.readouterr().out)
    assert printed["layouts"] and all(row["memory"]["total"] <= 40 * 2 ** 30 for row in printed["layouts"])
    speeds = [row["tokens_per_second"] for row in printed["layouts"]]
    assert speeds == sorted(speeds, reverse=True)
    reasons = {row["why"] for row in printed["left_out"]}
    assert any("over 40.0 GiB" in why for why in reasons) and any("takes ZeRO 0 or 1" in why for why in reasons)
    assert printed["layouts"][0]["command"].startswith("deepspeed --num_gpus 8 pretrain_gpt2.py --model-size gpt2-1.3b")
