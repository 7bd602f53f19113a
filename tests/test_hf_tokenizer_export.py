"""--to-hf writes the tokenizer a checkpoint was trained with so that transformers' AutoTokenizer gives
our tokenizer's ids on real text: GPT-2 BPE, BERT WordPiece and SentencePiece (BPE, unigram, byte fallback)."""

import os
import subprocess
import sys

import pytest

from arguments import saved_tokenizer
from checkpointing import read_checkpoint
from data_utils.hf_tokenizer import save_for_transformers
from data_utils.tokenization import make_tokenizer
from distributed import run_distributed

pytestmark = pytest.mark.distributed  # multi-rank training runs: left out of `pytest -m "not distributed"`

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHORT = ["--model-size", "tiny", "--seq-length", "64", "--batch-size", "2", "--train-iters", "1", "--eval-iters", "0"]


def _auto_tokenizer(folder, monkeypatch):
    from transformers import AutoTokenizer
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return AutoTokenizer.from_pretrained(folder)


def _assert_same_ids(auto, ours, texts):
    assert len(auto) == ours.vocab_size, f"transformers sees {len(auto)} tokens, ours has {ours.vocab_size}"
    for number, text in enumerate(texts):
        assert auto.encode(text, add_special_tokens=False) == ours.tokenize(text), f"document {number}"
    sample = ours.tokenize(texts[0])
    assert auto.decode(sample) == ours.detokenize(sample)


def _train(entry, argv):
    import importlib
    importlib.import_module(entry).main(argv)


def _checkpoint(entry, argv, save):
    run_distributed(1, _train, entry, SHORT + argv + ["--save", save])
    return save


@pytest.mark.parametrize("kind", ["GPT-2 BPE", "WordPiece", "SentencePiece"])
def test_to_hf_writes_a_tokenizer_that_autotokenizer_reads(kind, tmp_path, monkeypatch, sample_texts,
                                                            gpt2_data_prefix, bert_sentence_prefix, bert_vocab_file):
    save = str(tmp_path / "checkpoint")
    if kind == "GPT-2 BPE":
        _checkpoint("pretrain_gpt2", ["--data-path", gpt2_data_prefix, "--data-cache-dir", str(tmp_path)], save)
    elif kind == "WordPiece":
        _checkpoint("pretrain_bert", ["--data-path", bert_sentence_prefix, "--data-cache-dir", str(tmp_path),
                                      "--tokenizer-type", "BertWordPieceLowerCase", "--vocab-file", bert_vocab_file],
                    save)
    else:  # BERT's default: a SentencePiece model trained on first use from the bundled corpus
        _checkpoint("pretrain_bert", ["--vocab-size", "2000", "--data-cache-dir", str(tmp_path)], save)
    hf_dir = str(tmp_path / "hf")
    converted = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "convert_checkpoint.py"), "--load", save,
                                "--to-hf", hf_dir], capture_output=True, text=True)
    assert converted.returncode == 0, converted.stderr
    _, args, _ = read_checkpoint(save)
    ours, auto = saved_tokenizer(args), _auto_tokenizer(hf_dir, monkeypatch)
    _assert_same_ids(auto, ours, sample_texts[-300:])
    ids = ours.tokenize(sample_texts[-1])
    if kind == "GPT-2 BPE":
        assert auto(sample_texts[-1])["input_ids"] == ids and auto.eos_token_id == ours.eod
    else:
        assert auto(sample_texts[-1])["input_ids"] == [ours.cls, *ids, ours.sep], "BERT inputs: [CLS] text [SEP]"
        assert (auto.mask_token_id, auto.pad_token_id) == (ours.mask, ours.pad)


@pytest.mark.parametrize("options", [{"model_type": "unigram"}, {"byte_fallback": True, "character_coverage": 0.98}],
                         ids=["unigram", "BPE with byte fallback"])
def test_other_sentencepiece_models_read_alike(options, tmp_path, monkeypatch, sample_texts):
    ours = make_tokenizer("SentencePieceTokenizer", tokenizer_model=str(tmp_path / "spm.model"),
                          train_texts=sample_texts[:1000], vocab_size=2000, **options)
    save_for_transformers(ours, str(tmp_path), bert=False, model_max_length=128)
    _assert_same_ids(_auto_tokenizer(str(tmp_path), monkeypatch), ours, sample_texts[1000:1300])
