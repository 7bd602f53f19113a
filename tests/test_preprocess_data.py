"""scripts/preprocess_data.py end to end: the .bin holds exactly the tokenizer's ids; bad lines stop it."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from data_utils.indexed_dataset import MMapIndexedDataset
from data_utils.sentences import split_sentences
from data_utils.tokenization import make_tokenizer

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts", "preprocess_data.py")


def _run(*args):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True)


def _corpus(tmp_path, texts, extra_lines=()):
    path = tmp_path / "corpus.jsonl"
    lines = [json.dumps({"text": t, "title": f"t{i}"}) for i, t in enumerate(texts)] + list(extra_lines)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def test_documents_with_workers_equal_direct_tokenization(tmp_path, sample_texts):
    texts = sample_texts[:300]
    result = _run("--input", _corpus(tmp_path, texts), "--json-keys", "text", "title", "--append-eod",
                  "--workers", "2", "--output-prefix", str(tmp_path / "out"), "--log-interval", "100")
    assert result.returncode == 0, result.stderr
    progress = [line for line in result.stderr.splitlines() if line.startswith("processed [")]
    assert len(progress) == 3 and all("MB/s" in line and "ETA" in line for line in progress), result.stderr
    assert " 100% 300 documents" in result.stderr.splitlines()[-3] and "took" in result.stderr, result.stderr
    tokenizer = make_tokenizer("GPT2BPETokenizer")
    data = MMapIndexedDataset(str(tmp_path / "out_text_document"))
    assert data.dtype == np.uint16 and len(data) == data.num_documents == 300
    for i, text in enumerate(texts):
        assert data[i].tolist() == tokenizer.tokenize(text) + [tokenizer.eod]
    titles = MMapIndexedDataset(str(tmp_path / "out_title_document"))
    assert titles[7].tolist() == tokenizer.tokenize("t7") + [tokenizer.eod]


def test_split_sentences_writes_one_sequence_per_sentence(tmp_path, sample_texts, bert_vocab_file):
    texts = sample_texts[:40]
    result = _run("--input", _corpus(tmp_path, texts), "--split-sentences", "--tokenizer-type",
                  "BertWordPieceLowerCase", "--vocab-file", bert_vocab_file, "--output-prefix", str(tmp_path / "b"))
    assert result.returncode == 0, result.stderr
    tokenizer = make_tokenizer("BertWordPieceLowerCase", vocab_file=bert_vocab_file)
    data = MMapIndexedDataset(str(tmp_path / "b_text_sentence"))
    assert data.num_documents == 40
    for doc, text in enumerate(texts):
        expected = [tokenizer.tokenize(s) for s in split_sentences(text)]
        got = [data[i].tolist() for i in range(data.doc_idx[doc], data.doc_idx[doc + 1])]
        assert got == [e for e in expected if e]


@pytest.mark.parametrize("bad_line,message", [
    ("{not json", "corpus.jsonl:3: not valid JSON"),
    ('{"title": "x"}', "corpus.jsonl:3: no 'text' key (has ['title']); choose it with --json-keys"),
    ('{"text": ""}', "corpus.jsonl:3: empty document"),
])
def test_a_bad_line_stops_with_file_and_line_and_writes_nothing(tmp_path, bad_line, message):
    corpus = _corpus(tmp_path, ["first document", "second one"], [bad_line, json.dumps({"text": "fourth"})])
    prefix = tmp_path / "out"
    result = _run("--input", corpus, "--output-prefix", str(prefix))
    assert result.returncode != 0 and message in result.stderr and "--skip-malformed" in result.stderr
    assert not any(p.name.startswith("out_") for p in tmp_path.iterdir()), "no partial output may be left"
    result = _run("--input", corpus, "--output-prefix", str(prefix), "--skip-malformed")
    assert result.returncode == 0 and "skipped 1 malformed lines" in result.stderr
    assert MMapIndexedDataset(str(prefix) + "_text_document").num_documents == 3


def test_missing_vocab_file_is_a_clear_error(tmp_path):
    result = _run("--input", _corpus(tmp_path, ["x"]), "--output-prefix", str(tmp_path / "o"),
                  "--tokenizer-type", "BertWordPieceLowerCase", "--vocab-file", str(tmp_path / "nope.txt"))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: --vocab-file: ") and "nope.txt is not a file" in result.stderr


def test_a_bad_line_ends_a_run_with_two_workers_every_time(tmp_path, sample_texts, capsys):
    """Pool.terminate() while the pool's own thread was still feeding it lines deadlocked now and then
    (a run with a bad line never ended). 20 runs in this process, the bad line early (line 3) or with
    work in flight (after 600 documents): each ends within seconds with the one-line error."""
    import importlib.util
    import time
    spec = importlib.util.spec_from_file_location("preprocess_data", SCRIPT)
    preprocess = sys.modules.setdefault("preprocess_data", importlib.util.module_from_spec(spec))  # workers unpickle it
    spec.loader.exec_module(preprocess)
    (tmp_path / "early").mkdir()
    early = _corpus(tmp_path / "early", ["first document", "second one"], ["{not json", json.dumps({"text": "x"})])
    late = _corpus(tmp_path, sample_texts[:600], ["{not json"] + [json.dumps({"text": t}) for t in sample_texts])
    for run in range(20):
        corpus = early if run % 2 else late
        started = time.monotonic()
        with pytest.raises(SystemExit) as stopped:
            preprocess.main(["--input", corpus, "--output-prefix", str(tmp_path / "out"), "--workers", "2",
                             "--tokenizer-type", "CharacterLevelTokenizer"])  # quick to load: the pool is under test
        assert time.monotonic() - started < 20, f"run {run} took {time.monotonic() - started:.1f} s"
        assert "not valid JSON" in str(stopped.value) and "\n" not in str(stopped.value)
        assert not any(p.name.startswith("out_") for p in tmp_path.iterdir())
    capsys.readouterr()


def _preprocess_in_process(argv):
    sys.path.insert(0, os.path.dirname(SCRIPT))
    import preprocess_data
    preprocess_data.main(argv)


def test_zstd_text_folders_and_gpt_neo_tfrecords_give_the_loose_json_bin_idx(tmp_path, sample_texts, capsys):
    """The same documents as loose JSON, as The Pile's .jsonl.zst (lm_dataformat's {"text", "meta"} lines), as a
    folder of .txt files and as GPT-Neo's document-mode tfrecords (ids with the eod) write the same files; with
    --minimum-size the documents under it are left out, from every form alike."""
    import zstandard
    from tfrecord.writer import TFRecordWriter
    texts, tokenizer = [" ".join(text.split()[:n]) for text, n in zip(sample_texts[:40], range(5, 400, 10))], \
        make_tokenizer("GPT2BPETokenizer")
    loose = _corpus(tmp_path, texts)
    (tmp_path / "pile.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress("".join(
        json.dumps({"text": t, "meta": {"pile_set_name": "test"}}) + "\n" for t in texts).encode()))
    (tmp_path / "txt").mkdir()
    for i, text in enumerate(texts):
        (tmp_path / "txt" / f"{i:03d}.txt").write_text(text, encoding="utf-8")
    (tmp_path / "neo").mkdir()
    writer = TFRecordWriter(str(tmp_path / "neo" / "0_40.tfrecords"))
    for text in texts:
        writer.write({"text": (tokenizer.tokenize(text) + [tokenizer.eod], "int")})
    writer.close()
    for minimum in (0, 64):
        outputs = []
        for name, source in (("json", loose), ("zst", str(tmp_path / "pile.jsonl.zst")), ("txt", str(tmp_path / "txt")),
                             ("neo", str(tmp_path / "neo"))):
            prefix = str(tmp_path / f"{name}-{minimum}")
            _preprocess_in_process(["--input", source, "--append-eod", "--minimum-size", str(minimum),
                                    "--output-prefix", prefix])
            outputs.append([open(f"{prefix}_text_document.{ext}", "rb").read() for ext in ("bin", "idx")])
        assert all(output == outputs[0] for output in outputs[1:])
        kept = [t for t in texts if len(tokenizer.tokenize(t)) >= minimum]
        data = MMapIndexedDataset(str(tmp_path / f"json-{minimum}_text_document"))
        assert len(data) == len(kept) and (minimum == 0 or 0 < len(kept) < len(texts))
        assert data[len(kept) - 1].tolist() == tokenizer.tokenize(kept[-1]) + [tokenizer.eod]
    assert f"left out {len(texts) - len(kept)} documents of fewer than 64 tokens" in capsys.readouterr().err
