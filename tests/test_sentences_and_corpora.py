"""Offline sentence splitting (punkt, and its announced fallback) and named corpora."""

import os
import subprocess
import sys

import pytest

from data_utils import sentences
from data_utils.corpora import NAMED_CORPORA, resolve_corpus

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_punkt_keeps_abbreviations_together():
    sentences.sentence_splitter.cache_clear()
    split, source = sentences.sentence_splitter()
    assert "punkt" in source
    text = "Dr. Smith met Mr. Jones at 5 p.m. on Monday. They talked about the U.S. economy! Was it late? Yes."
    assert split(text) == ["Dr. Smith met Mr. Jones at 5 p.m. on Monday.", "They talked about the U.S. economy!",
                           "Was it late?", "Yes."]


def test_without_punkt_the_fallback_is_announced(monkeypatch, capsys):
    def unavailable():
        raise ImportError("no punkt here")
    monkeypatch.setattr(sentences, "_nltk_data_tokenizer", unavailable)
    monkeypatch.setattr(sentences, "_packaged_parameters_tokenizer", unavailable)
    sentences.sentence_splitter.cache_clear()
    try:
        assert sentences.split_sentences("One here. Two (there). Three!") == ["One here.", "Two (there).", "Three!"]
        assert sentences.sentence_splitter()[1] == "rule-based fallback"
        assert "sentences are split by a plain rule" in capsys.readouterr().err
    finally:
        sentences.sentence_splitter.cache_clear()


def test_named_corpora(tmp_path, monkeypatch):
    sample = resolve_corpus("sample")
    assert sample.path == NAMED_CORPORA["sample"].path and os.path.isfile(sample.path)
    monkeypatch.setenv("CORPORA_ROOT", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"corpus 'wikipedia': .*wikipedia.json does not exist.*CORPORA_ROOT"):
        resolve_corpus("wikipedia")
    (tmp_path / "wikipedia").mkdir()
    (tmp_path / "wikipedia" / "wikipedia.json").write_text('{"text": "x"}\n')
    assert resolve_corpus("wikipedia").path == str(tmp_path / "wikipedia" / "wikipedia.json")
    with pytest.raises(FileNotFoundError, match="neither a named corpus"):
        resolve_corpus("no-such-corpus")


def run(script, *args):
    return subprocess.run([sys.executable, os.path.join(REPO, "scripts", script), *args], capture_output=True, text=True)


def test_split_json_and_check_dataset_scripts(tmp_path, sample_corpus_path):
    result = run("split_json.py", "--input", sample_corpus_path, "--output-dir", str(tmp_path), "--ratios", "0.9",
                 "0.05", "0.05", "--shuffle")
    assert result.returncode == 0, result.stderr
    parts = [(tmp_path / f"jargon_file_{n}.jsonl").read_text(encoding="utf-8").splitlines()
             for n in ("train", "valid", "test")]
    with open(sample_corpus_path, encoding="utf-8") as f:
        original = f.read().splitlines()
    assert [len(p) for p in parts] == [2076, 116, 115]  # round(0.9 * 2307), round(0.95 * 2307)
    assert sorted(sum(parts, [])) == sorted(original), "every line lands in exactly one split, unchanged"
    result = run("preprocess_data.py", "--input", str(tmp_path / "jargon_file_valid.jsonl"), "--output-prefix",
                 str(tmp_path / "v"), "--tokenizer-type", "CharacterLevelTokenizer", "--append-eod")
    assert result.returncode == 0, result.stderr
    result = run("check_dataset.py", "--data-path", str(tmp_path / "v_text_document"), "--tokenizer-type",
                 "CharacterLevelTokenizer")
    assert result.returncode == 0 and "116 documents" in result.stdout and "..256, vocabulary size 258" in result.stdout
    result = run("check_dataset.py", "--data-path", str(tmp_path / "v_text_document"), "--tokenizer-type",
                 "BertWordPieceLowerCase", "--vocab-file", os.path.join(REPO, "no-vocab.txt"))
    assert result.returncode == 1 and result.stderr.startswith("error: --vocab-file")
