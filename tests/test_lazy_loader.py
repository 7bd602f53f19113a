"""Loose JSON through mmap: documents by index, a cached offset index, and clear errors naming file:line."""

import json
import os

import pytest

from data_utils.lazy_loader import LooseJsonDataset, MalformedJsonError


def _write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def test_documents_by_index_on_the_real_corpus(sample_corpus_path, sample_texts):
    dataset = LooseJsonDataset(sample_corpus_path)
    assert len(dataset) == len(sample_texts) == 2307
    assert [dataset[i] for i in (0, 1000, 2306)] == [sample_texts[i] for i in (0, 1000, 2306)]
    assert list(dataset) == sample_texts


def test_offset_index_is_built_once_and_reused(tmp_path):
    path = _write_lines(tmp_path / "c.jsonl", [json.dumps({"body": f"doc {i} ünïcode"}) for i in range(50)])
    first = LooseJsonDataset(path, text_key="body")
    index = path + ".body.offsets.npz"
    assert os.path.isfile(index)
    built = os.path.getmtime(index)
    second = LooseJsonDataset(path, text_key="body")
    assert os.path.getmtime(index) == built and second[49] == first[49] == "doc 49 ünïcode"
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"body": "appended"}) + "\n")
    os.utime(path, (built + 5, built + 5))
    assert LooseJsonDataset(path, text_key="body")[50] == "appended", "a newer corpus must rebuild the index"


def test_offset_index_goes_to_a_cache_folder(tmp_path):
    """A corpus folder may be read-only: with cache_dir nothing is written beside the corpus."""
    corpus, cache = tmp_path / "corpus", tmp_path / "cache"
    corpus.mkdir()
    path = _write_lines(corpus / "c.jsonl", [json.dumps({"text": f"doc {i}"}) for i in range(5)])
    assert list(LooseJsonDataset(path, cache_dir=str(cache))) == [f"doc {i}" for i in range(5)]
    assert os.listdir(corpus) == ["c.jsonl"] and len(os.listdir(cache)) == 1
    assert list(LooseJsonDataset(path, cache_dir=str(cache))) == [f"doc {i}" for i in range(5)]


def test_last_line_without_newline_and_blank_lines(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "a"}\n\n{"text": "b"}\n   \n{"text": "c"}', encoding="utf-8")
    assert list(LooseJsonDataset(str(path))) == ["a", "b", "c"]


@pytest.mark.parametrize("bad_line,message", [
    ('{"text": "unterminated', r"c.jsonl:3: not valid JSON"),
    ('{"title": "no text"}', r"c.jsonl:3: no 'text' key \(has \['title'\]\); choose it with --text-key"),
    ('{"text": "   "}', r"c.jsonl:3: empty document under 'text'"),
    ('{"text": 42}', r"c.jsonl:3: 'text' is a int, not a string"),
])
def test_bad_lines_name_file_and_line(tmp_path, bad_line, message):
    path = _write_lines(tmp_path / "c.jsonl", ['{"text": "one"}', '{"text": "two"}', bad_line, '{"text": "four"}'])
    with pytest.raises(MalformedJsonError, match=message):
        LooseJsonDataset(path)
    skipping = LooseJsonDataset(path, skip_malformed=True)
    assert list(skipping) == ["one", "two", "four"]
    assert skipping.summary().endswith("3 documents, 1 malformed lines skipped")
    assert LooseJsonDataset(path, skip_malformed=True).skipped == skipping.skipped, "the cached index keeps the count"
