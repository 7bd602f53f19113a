"""The mmap .bin/.idx format: exact round trip, header bytes by the Megatron specification, bad files."""

import shutil
import struct

import numpy as np
import pytest

from data_utils.indexed_dataset import IndexedDatasetBuilder, MMapIndexedDataset, TokenIdError, check_dataset


def _documents(seed=0, count=20, high=50000):
    rng = np.random.RandomState(seed)
    return [[rng.randint(0, high, size=rng.randint(1, 40)) for _ in range(rng.randint(1, 4))] for _ in range(count)]


def _write(prefix, documents, dtype=np.uint16, vocab_size=None):
    builder = IndexedDatasetBuilder(str(prefix), dtype, vocab_size)
    for document in documents:
        builder.add_document(document)
    builder.finalize()
    return MMapIndexedDataset(str(prefix))


@pytest.mark.parametrize("dtype", [np.uint16, np.int32])
def test_round_trip_is_exact(tmp_path, dtype):
    documents = _documents()
    dataset = _write(tmp_path / "data", documents, dtype)
    sequences = [s for d in documents for s in d]
    assert len(dataset) == len(sequences) and dataset.num_documents == len(documents)
    assert dataset.dtype == np.dtype(dtype)
    for got, expected in zip((dataset[i] for i in range(len(dataset))), sequences):
        assert np.array_equal(got, expected)
    longest = int(np.argmax([len(s) for s in sequences]))
    assert np.array_equal(dataset.get(longest, 1, 2), sequences[longest][1:3])
    with pytest.raises(IndexError):
        dataset.get(longest, 1, len(sequences[longest]))
    assert dataset.doc_idx.tolist() == np.cumsum([0] + [len(d) for d in documents]).tolist()


def test_index_bytes_follow_the_megatron_specification(tmp_path):
    """Header b'MMIDIDX\\x00\\x00', <Q version 1, <B dtype code (8 = uint16), <Q sequences, <Q doc-index
    entries, then int32 sizes, int64 byte pointers, int64 document index: built here by hand."""
    _write(tmp_path / "data", [[[5, 6, 7], [8]], [[9, 10]]], np.uint16)
    expected = (b"MMIDIDX\x00\x00" + struct.pack("<Q", 1) + struct.pack("<B", 8) + struct.pack("<Q", 3)
                + struct.pack("<Q", 3) + struct.pack("<3i", 3, 1, 2) + struct.pack("<3q", 0, 6, 8)
                + struct.pack("<3q", 0, 2, 3))
    assert (tmp_path / "data.idx").read_bytes() == expected
    assert (tmp_path / "data.bin").read_bytes() == struct.pack("<6H", 5, 6, 7, 8, 9, 10)


def test_merge_keeps_the_document_index(tmp_path):
    first, second = _documents(1, 5), _documents(2, 7)
    _write(tmp_path / "a", first)
    _write(tmp_path / "b", second)
    builder = IndexedDatasetBuilder(str(tmp_path / "merged"), np.uint16)
    builder.merge_file_(str(tmp_path / "a"))
    builder.merge_file_(str(tmp_path / "b"))
    builder.finalize()
    merged = MMapIndexedDataset(str(tmp_path / "merged"))
    reference = _write(tmp_path / "whole", first + second)
    assert merged.doc_idx.tolist() == reference.doc_idx.tolist()
    assert all(np.array_equal(merged[i], reference[i]) for i in range(len(reference)))


def test_truncated_bin_is_an_error(tmp_path):
    _write(tmp_path / "data", _documents())
    with open(tmp_path / "data.bin", "r+b") as f:
        f.truncate(f.seek(0, 2) - 2)
    with pytest.raises(ValueError, match=r"data.bin has \d+ bytes but .*data.idx describes \d+ bytes"):
        MMapIndexedDataset(str(tmp_path / "data"))


def test_idx_of_another_dtype_is_an_error(tmp_path):
    documents = _documents()
    _write(tmp_path / "narrow", documents, np.uint16)
    _write(tmp_path / "wide", documents, np.int32)
    shutil.copy(tmp_path / "wide.idx", tmp_path / "narrow.idx")
    with pytest.raises(ValueError, match=r"describes \d+ bytes of int32 tokens.*not written together"):
        MMapIndexedDataset(str(tmp_path / "narrow"))


def test_not_an_index_and_missing_files_are_errors(tmp_path):
    (tmp_path / "junk.idx").write_bytes(b"not an index at all, certainly not" * 2)
    (tmp_path / "junk.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="junk.idx: not an mmap indexed-dataset index"):
        MMapIndexedDataset(str(tmp_path / "junk"))
    with pytest.raises(FileNotFoundError, match=r"nothing.idx: no such file; --data-path takes the prefix"):
        MMapIndexedDataset(str(tmp_path / "nothing"))


def test_token_ids_outside_the_vocabulary(tmp_path):
    builder = IndexedDatasetBuilder(str(tmp_path / "bad"), np.uint16, vocab_size=1000)
    with pytest.raises(TokenIdError, match=r"bad: sequence 0: token id 1000 is outside the vocabulary \[0, 1000\)"):
        builder.add_item([5, 1000])
    builder.discard()
    assert not (tmp_path / "bad.bin").exists() and not (tmp_path / "bad.bin.tmp").exists()
    _write(tmp_path / "data", [[[1, 2, 3]], [[4, 60000]]], np.uint16)
    assert "token ids 1..60000, vocabulary size 65536" in check_dataset(str(tmp_path / "data"), 65536)
    with pytest.raises(TokenIdError, match="data.bin: token id 60000 is outside the vocabulary"):
        check_dataset(str(tmp_path / "data"), 50257)
