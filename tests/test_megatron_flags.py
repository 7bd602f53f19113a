"""The names users bring from Megatron-LM (v0 and later), Megatron-DeepSpeed and NeMo mean what ours mean:
alias flags, sample-counted schedules, NeMo's preprocessing flags, the launch scripts' variables; v0's
fp32 switches compute in fp32, --deep-init scales BERT's output layers, --valid-data/--test-data and
several --train-data feed the splits, and Google BERT's TFRecord files read as written."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import arguments
from distributed import run_distributed
from learning_rates import megatron_scheduler, warmup_iters

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "scripts"))


def _rates(args, steps):
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=args.lr)
    scheduler = megatron_scheduler(args)(optimizer)
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_sample_counted_schedule_equals_the_iteration_one():
    samples = arguments.get_args(["--train-samples", "163", "--global-batch-size", "8", "--lr-warmup-samples", "16",
                                  "--lr-decay-samples", "120", "--lr-decay-style", "cosine"])
    iterations = arguments.get_args(["--train-iters", "20", "--global-batch-size", "8", "--lr-warmup-iters", "2",
                                     "--lr-decay-iters", "15", "--lr-decay-style", "cosine"])
    assert (samples.train_iters, samples.lr_decay_iters, warmup_iters(samples)) == (20, 15, 2)
    assert (iterations.train_iters, iterations.lr_decay_iters, warmup_iters(iterations)) == (20, 15, 2)
    assert _rates(samples, 20) == _rates(iterations, 20)
    fraction = arguments.get_args(["--train-iters", "20", "--lr-decay-iters", "15", "--warmup", str(2 / 15),
                                   "--lr-decay-style", "cosine"])
    assert _rates(fraction, 20) == _rates(iterations, 20)


def test_micro_batch_times_world_is_the_global_batch_for_samples(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    args = arguments.get_args(["--train-samples", "800", "--micro-batch-size", "5", "--tensor-model-parallel-size", "2",
                               "--num-attention-heads", "4"])
    assert args.train_iters == 800 // (5 * 2)


def _error(argv, capsys):
    with pytest.raises(SystemExit) as stopped:
        arguments.get_args(argv)
    assert stopped.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("argv, expected", [
    (["--no-masked-softmax-fusion"], "scaled_dot_product_attention"),
    (["--use-flash-attn"], "already uses flash attention"),
    (["--no-bias-gelu-fusion"], "no custom kernel"),
    (["--train-samples", "100", "--train-iters", "5"], "--train-samples and --train-iters both set the length"),
    (["--warmup", "0.1", "--lr-warmup-iters", "3"], "--warmup and --lr-warmup-iters all set the warmup"),
    (["--fp32-tokentypes"], "--fp32-tokentypes is BERT's"),
    (["--deep-init"], "always initialised with std / sqrt(2 x layers)"),
    (["--tokenizer-type", "GPT2BPETokenizer", "--tokenizer-model", "x.model"], "is a SentencePiece model"),
], ids=lambda value: value[0] if isinstance(value, list) else None)
def test_flags_without_meaning_here_are_one_clear_line(argv, expected, capsys):
    message = _error(argv, capsys)
    assert expected.replace("no custom kernel", "not fused by a custom kernel") in message, message


MEGATRON_CORE = ["--swiglu", "--position-embedding-type", "rope", "--normalization", "RMSNorm",
                 "--untie-embeddings-and-output-weights", "--disable-bias-linear", "--use-distributed-optimizer",
                 "--recompute-granularity", "full", "--recompute-method", "uniform", "--recompute-num-layers", "2",
                 "--data-impl", "mmap", "--tokenizer-type", "GPT2BPETokenizer", "--distributed-backend", "nccl"]
OURS = ["--activation", "swiglu", "--position-embedding-type", "rotary", "--normalization", "rmsnorm",
        "--untie-embeddings", "--no-bias", "--zero-stage", "1", "--checkpoint-activations", "--checkpoint-num-layers",
        "2", "--tokenizer-type", "GPT2BPETokenizer", "--distributed-backend", "nccl"]


def test_megatron_core_job_flags_are_our_features_under_their_names():
    """The flags Megatron-Core job files carry (Kempner's guide, Megatron-DeepSpeed's examples) set what ours set."""
    theirs, ours = vars(arguments.get_args(MEGATRON_CORE)), vars(arguments.get_args(OURS))
    differing = {name for name in theirs if theirs[name] != ours.get(name)}
    assert differing == {"explicit", "recompute_granularity", "recompute_method", "use_distributed_optimizer"}, differing


@pytest.mark.parametrize("argv, expected", [
    (["--sequence-parallel"], "sequence parallelism (LayerNorm and dropout split over tensor ranks) is not built"),
    (["--group-query-attention", "--num-query-groups", "8"], "grouped-query attention is not built here"),
    (["--recompute-granularity", "selective"], "--recompute-granularity selective (attention's core recomputed "
                                                "alone) is not built here"),
    (["--recompute-method", "block"], "--recompute-method block (only the first --recompute-num-layers layers"),
    (["--data-impl", "lazy"], "--data-impl lazy: .bin/.idx data is always read memory-mapped here"),
    (["--use-distributed-optimizer", "--zero-stage", "0"], "--use-distributed-optimizer partitions optimizer states"),
], ids=lambda value: value[0] if isinstance(value, list) else None)
def test_megatron_core_flags_we_do_not_have_are_one_line_each(argv, expected, capsys):
    assert expected in _error(argv, capsys)


def test_v0_switches_that_are_always_on_change_nothing():
    with_flag = vars(arguments.get_args(["--lazy-loader"]))
    without = vars(arguments.get_args([]))
    assert with_flag == without


def test_tokenizer_model_alone_selects_sentencepiece():
    args = arguments.get_args(["--tokenizer-model", "spm.model"])
    assert (args.tokenizer_type, args.tokenizer_path) == ("SentencePieceTokenizer", "spm.model")


def test_launch_scripts_read_megatrons_variables():
    env = dict(os.environ, ENTRY="pretrain_gpt2.py", TP_SIZE="2", PP_SIZE="2", DATA_PATH="0.3 data/a 0.7 data/b",
               VOCAB_FILE="gpt2-vocab.json", MERGE_FILE="gpt2-merges.txt", CHECKPOINT_PATH="ckpt/run")
    printed = subprocess.run(["bash", "-c", f'source {REPO}/scripts/defaults.sh; printf "%s\\n" "${{TRAIN_ARGS[@]}}"'],
                             env=env, capture_output=True, text=True, check=True).stdout.split("\n")
    line = " ".join(printed)
    for expected in ("--model-parallel-size 2", "--pipe-parallel-size 2", "--data-path 0.3 data/a 0.7 data/b",
                     "--vocab-file gpt2-vocab.json", "--merge-file gpt2-merges.txt", "--save ckpt/run",
                     "--load ckpt/run"):
        assert expected in line, (expected, line)


# NeMo's preprocessing flags and the tokenizer trainer

def _preprocess(tmp_path, name, *flags):
    import preprocess_data
    preprocess_data.main(["--input", str(tmp_path / "in.jsonl"), "--output-prefix", str(tmp_path / name), *flags])
    with open(tmp_path / f"{name}_text_document.bin", "rb") as f:
        return f.read()


@pytest.fixture()
def small_corpus(tmp_path, sample_corpus_path):
    with open(sample_corpus_path, encoding="utf-8") as source, open(tmp_path / "in.jsonl", "w") as f:
        f.writelines(line for _, line in zip(range(60), source))
    return tmp_path


def test_nemo_preprocessing_flags_write_what_ours_write(small_corpus, bert_vocab_file):
    tmp = small_corpus
    ours = _preprocess(tmp, "ours", "--tokenizer-type", "GPT2BPETokenizer", "--append-eod")
    assert _preprocess(tmp, "megatron", "--tokenizer-library", "megatron", "--tokenizer-type", "GPT2BPETokenizer",
                       "--dataset-impl", "mmap", "--append-eod") == ours
    assert _preprocess(tmp, "hf", "--tokenizer-library", "huggingface", "--tokenizer-type", "gpt2",
                       "--dataset-impl", "mmap", "--append-eod") == ours
    bert = _preprocess(tmp, "bert", "--tokenizer-type", "BertWordPieceLowerCase", "--vocab-file", bert_vocab_file)
    assert _preprocess(tmp, "hf-bert", "--tokenizer-library", "huggingface", "--tokenizer-type",
                       "bert-base-uncased") == bert
    assert _preprocess(tmp, "vocab", "--tokenizer-library", "megatron", "--tokenizer-type", "BertWordPieceLowerCase",
                       "--vocab", bert_vocab_file) == bert


def test_trained_tokenizer_serves_nemos_sentencepiece_library(small_corpus):
    import sentencepiece as spm
    import train_tokenizer
    tmp = small_corpus
    (tmp / "extra.txt").write_text("Version 2026 of the café menu.\n" * 20, encoding="utf-8")
    train_tokenizer.main(["--input", str(tmp / "in.jsonl"), str(tmp / "extra.txt"), "--model-prefix",
                          str(tmp / "spm" / "t"), "--vocab-size", "600", "--model-type", "unigram", "--byte-fallback",
                          "--split-digits", "--character-coverage", "0.9995"])
    processor = spm.SentencePieceProcessor(model_file=str(tmp / "spm" / "t.model"))
    assert processor.get_piece_size() == 600 and (processor.pad_id(), processor.unk_id()) == (0, 1)
    pieces = processor.encode("2026 ☃", out_type=str)
    assert [p for p in pieces if p.strip("▁").isdigit()] == ["2", "0", "2", "6"] or "▁2" in pieces, pieces
    assert processor.unk_id() not in processor.encode("☃ 漢字")  # byte fallback: no unknowns
    nemo = _preprocess(tmp, "spm", "--tokenizer-library", "sentencepiece", "--tokenizer-model",
                       str(tmp / "spm" / "t.model"), "--dataset-impl", "mmap")
    assert nemo == _preprocess(tmp, "spm-ours", "--tokenizer-type", "SentencePieceTokenizer", "--tokenizer-model",
                               str(tmp / "spm" / "t.model"))
    with pytest.raises(SystemExit):
        _preprocess(tmp, "bad", "--tokenizer-library", "sentencepiece")


# v0's fp32 switches and --deep-init, inside the model

def _layer_norm_dtypes(model, tokens, types):
    from torch.overrides import TorchFunctionMode
    seen = []

    class Record(TorchFunctionMode):
        def __torch_function__(self, func, types_, args=(), kwargs=None):
            if func is torch.nn.functional.layer_norm:
                seen.append(args[0].dtype)
            return func(*args, **(kwargs or {}))
    with Record(), torch.no_grad():
        logits, _ = model(tokens, types)
    return seen, logits.dtype


def _fp32_switches_body():
    import mpu
    from model import BertModel
    from model.normalization import compute_layernorms_in_fp32
    mpu.initialize_model_parallel(1)
    tokens, types = torch.randint(0, 500, (2, 16)), (torch.arange(16) >= 8).long().expand(2, 16)
    results = {}
    for name, options, fp32_norms in (("none", {}, False), ("embedding", {"fp32_embedding": True}, False),
                                      ("tokentypes", {"fp32_tokentypes": True}, False), ("layernorm", {}, True)):
        torch.manual_seed(0)
        model = BertModel(2, 512, 32, 2, 16, **options).to(torch.bfloat16).eval()
        if fp32_norms:
            compute_layernorms_in_fp32(model)
        results[name] = _layer_norm_dtypes(model, tokens, types)
    return results


def test_fp32_switches_compute_those_parts_in_fp32():
    results = run_distributed(1, _fp32_switches_body)[0]
    bf16, fp32 = torch.bfloat16, torch.float32
    norms, logits = results["none"]
    assert set(norms) == {bf16} and logits == bf16
    # embedding LayerNorm first, then two per layer and the masked-LM head's
    assert results["embedding"][0][0] == fp32 and set(results["embedding"][0][1:]) == {bf16}
    assert results["tokentypes"][0][0] == fp32 and set(results["tokentypes"][0][1:]) == {bf16}
    assert set(results["layernorm"][0]) == {fp32} and len(results["layernorm"][0]) == len(norms)
    assert all(dtype == bf16 for _, dtype in results.values())


def test_fp32_allreduce_sets_the_communication_dtype():
    from deepspeed_config import build_ds_config
    args = arguments.get_args(["--fp32-allreduce", "--bf16"])
    assert build_ds_config(args, 1)["communication_data_type"] == "fp32"
    assert "communication_data_type" not in build_ds_config(arguments.get_args(["--bf16"]), 1)


def _output_init_std_body():
    import mpu
    from model import BertModel
    mpu.initialize_model_parallel(1)
    stds = {}
    for deep_init in (False, True):
        torch.manual_seed(0)
        model = BertModel(8, 512, 256, 4, 16, deep_init=deep_init)
        layer = model.transformer.layers[0]
        stds[deep_init] = (layer.attention.dense.weight.std().item(), layer.mlp.dense_4h_to_h.weight.std().item(),
                           layer.mlp.dense_h_to_4h.weight.std().item())
    return stds


def test_deep_init_scales_berts_output_layers():
    stds = run_distributed(1, _output_init_std_body)[0]
    for value in stds[False]:
        assert value == pytest.approx(0.02, rel=0.02)
    attention, mlp_out, mlp_in = stds[True]
    assert attention == pytest.approx(0.02 / 4, rel=0.02) and mlp_out == pytest.approx(0.02 / 4, rel=0.02)
    assert mlp_in == pytest.approx(0.02, rel=0.02)


# --valid-data, --test-data and several --train-data

def _write_jsonl(path, texts):
    import json
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"text": text}) + "\n" for text in texts)
    return str(path)


def test_valid_and_test_data_replace_their_splits_and_train_corpora_mix_by_tokens(tmp_path, sample_texts):
    import pretrain_gpt2
    from data_utils.tokenization import make_tokenizer
    tokenizer = make_tokenizer("GPT2BPETokenizer")
    words = {"a": None, "b": " walrus narwhal", "valid": " zebra quokka", "test": " okapi axolotl"}
    files = {"a": _write_jsonl(tmp_path / "a.jsonl", sample_texts[:200])}
    for name in ("b", "valid", "test"):
        files[name] = _write_jsonl(tmp_path / f"{name}.jsonl", [words[name] * (20 + i) for i in range(40)])
    args = arguments.get_args(["--train-data", files["a"], files["b"], "--valid-data", files["valid"],
                               "--test-data", files["test"], "--data-cache-dir", str(tmp_path / "cache"),
                               "--seq-length", "32"])
    train, valid, test = pretrain_gpt2.datasets_provider(args, tokenizer, (400, 30, 20))
    allowed = {name: set(tokenizer.tokenize(words[name])) | {tokenizer.eod} for name in ("b", "valid", "test")}
    for dataset, name in ((valid, "valid"), (test, "test")):
        assert len(dataset) >= (30 if name == "valid" else 20)
        assert all(set(dataset[i]["text"].tolist()) <= allowed[name] for i in range(len(dataset))), name
    from_b = [set(train[i]["text"].tolist()) <= allowed["b"] for i in range(400)]
    tokens = {"a": sum(len(tokenizer.tokenize(text)) for text in sample_texts[:200]),
              "b": sum(len(tokenizer.tokenize(words["b"] * (20 + i))) for i in range(40))}
    share_b = tokens["b"] / (tokens["a"] + tokens["b"])
    assert abs(np.mean(from_b) - share_b) < 0.1, (np.mean(from_b), share_b)
    assert not any("quokka" in tokenizer.detokenize(train[i]["text"].tolist()) for i in range(400))


# Google BERT TFRecords

def write_bert_tfrecords(path, records, seq_length=32, max_predictions=5, seed=0):
    """A file as create_pretraining_data.py writes it (tfrecord's writer); returns the records' features."""
    import tfrecord
    rng = np.random.RandomState(seed)
    written = []
    writer = tfrecord.TFRecordWriter(str(path))
    for _ in range(records):
        length = rng.randint(12, seq_length + 1)
        ids = np.zeros(seq_length, dtype=np.int64)
        ids[:length] = rng.randint(1000, 29000, size=length)
        ids[0], ids[length - 1] = 101, 102
        split = rng.randint(2, length - 2)
        segments = np.zeros(seq_length, dtype=np.int64)
        segments[split:length] = 1
        count = rng.randint(1, max_predictions + 1)
        positions = np.zeros(max_predictions, dtype=np.int64)
        positions[:count] = np.sort(rng.choice(np.arange(1, length - 1), size=count, replace=False))
        labels = np.zeros(max_predictions, dtype=np.int64)
        labels[:count] = ids[positions[:count]]
        ids[positions[:count]] = 103
        weights = np.zeros(max_predictions, dtype=np.float32)
        weights[:count] = 1.0
        features = {"input_ids": ids, "input_mask": (np.arange(seq_length) < length).astype(np.int64),
                    "segment_ids": segments, "masked_lm_positions": positions, "masked_lm_ids": labels,
                    "masked_lm_weights": weights, "next_sentence_labels": np.array([rng.randint(0, 2)])}
        writer.write({name: (value.tolist(), "float" if value.dtype == np.float32 else "int")
                      for name, value in features.items()})
        written.append(features)
    writer.close()
    return written


def test_tfrecord_samples_are_what_the_file_holds(tmp_path):
    import tfrecord

    from data_utils.tfrecord_dataset import build_tfrecord_datasets
    first = write_bert_tfrecords(tmp_path / "a.tfrecord", 30, seed=1)
    second = write_bert_tfrecords(tmp_path / "b.tfrecord", 20, seed=2)
    read_back = list(tfrecord.tfrecord_loader(str(tmp_path / "a.tfrecord"), None)) + \
        list(tfrecord.tfrecord_loader(str(tmp_path / "b.tfrecord"), None))
    assert all(np.array_equal(r["input_ids"], w["input_ids"]) for r, w in zip(read_back, first + second))
    files = [str(tmp_path / "a.tfrecord"), str(tmp_path / "b.tfrecord")]
    train, valid, _ = build_tfrecord_datasets(files, "80,20,0", (80, 10, 0), 32, 1234, 30522, 5, str(tmp_path / "cache"))
    records = first + second
    seen = []
    for i in range(40):  # the first epoch holds every training record once
        sample = train[i]
        match = [k for k in range(40) if np.array_equal(records[k]["input_ids"], sample["text"])]
        assert len(match) == 1
        record = records[match[0]]
        seen.append(match[0])
        real = record["masked_lm_weights"] > 0
        assert np.array_equal(sample["types"], record["segment_ids"])
        assert np.array_equal(sample["padding_mask"], record["input_mask"])
        assert np.array_equal(np.flatnonzero(sample["loss_mask"]), record["masked_lm_positions"][real])
        assert np.array_equal(sample["lm_positions"][:real.sum()], record["masked_lm_positions"][real])
        assert len(sample["lm_positions"]) == 5 and not sample["loss_mask"][sample["lm_positions"][real.sum():]].any()
        assert np.array_equal(sample["labels"][record["masked_lm_positions"][real]], record["masked_lm_ids"][real])
        assert sample["is_random"] == record["next_sentence_labels"][0]
    assert sorted(seen) == list(range(40))
    assert {int(np.flatnonzero([np.array_equal(r["input_ids"], valid[i]["text"]) for r in records])[0])
            for i in range(10)} == set(range(40, 50))
    with open(files[1], "r+b") as f:  # damage a payload byte of b's first record
        f.seek(20)
        byte = f.read(1)
        f.seek(20)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ValueError, match="fails its CRC32C check"):
        [train[i] for i in range(40)]
    with pytest.raises(ValueError, match="--seq-length 32"):
        build_tfrecord_datasets(files[:1], "1,0,0", (4, 0, 0), 64, 1, 30522, 5, str(tmp_path / "cache"))[0][0]
    most = max(int((r["masked_lm_weights"] > 0).sum()) for r in first)
    with pytest.raises(ValueError, match=f"a.tfrecord .*more than the {most - 1} .*--max-preds-per-seq"):
        few = build_tfrecord_datasets(files[:1], "1,0,0", (30, 0, 0), 32, 1, 30522, most - 1, str(tmp_path / "cache"))
        [few[0][i] for i in range(30)]


def test_the_gpt_neo_script_trains_local_layers_with_adam(tmp_path):
    """scripts/ds_pretrain_gpt_neo.sh's defaults show GPT-Neo: a window shorter than the sequence (a
    256-token window at 128-token sequences made its local layers global), no dropout (GPT-Neo's configs;
    FlexAttention's kernel then runs the local layers on a GPU) and Adam, GPT-Neo's optimizer in its own
    examples; the gpt-neo presets drop dropout too. The deepspeed launcher is replaced by one that prints what it was given."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "deepspeed").write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@"\n')
    os.chmod(bin_dir / "deepspeed", 0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    for seq, window in (("128", "32"), ("2048", "256")):
        given = subprocess.run(["bash", os.path.join(REPO, "scripts", "ds_pretrain_gpt_neo.sh")], capture_output=True,
                               text=True, check=True, env={**env, "SEQ_LENGTH": seq}).stdout.split("\n")
        assert given[given.index("--seq-length") + 1] == seq and given[given.index("--attention-window") + 1] == window
        assert given[given.index("--attention-dropout") + 1] == "0" == given[given.index("--hidden-dropout") + 1]
        with open(os.path.join(REPO, given[given.index("--deepspeed_config") + 1])) as f:
            assert json.load(f)["optimizer"]["type"] == "AdamW"
    preset = arguments.get_args(["--model-size", "gpt-neo-125m"])
    assert preset.attention_dropout == 0.0 == preset.hidden_dropout
    assert arguments.get_args(["--model-size", "gpt-neo-125m", "--attention-dropout", "0.1"]).attention_dropout == 0.1
