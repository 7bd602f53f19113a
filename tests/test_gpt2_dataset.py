"""Packed GPT-2 samples, document splits, blending by weight."""

import os

import numpy as np
import pytest

from data_utils.dataset_builder import BlendableDataset, parse_data_path, parse_split
from data_utils.gpt2_dataset import GPT2Dataset, build_gpt2_datasets
from data_utils.indexed_dataset import IndexedDatasetBuilder, MMapIndexedDataset, TokenIdError


def _indexed(path, sizes, seed=0, high=1000):
    rng = np.random.RandomState(seed)
    builder = IndexedDatasetBuilder(str(path), np.uint16)
    for size in sizes:
        builder.add_document([rng.randint(0, high, size=size)])
    builder.finalize()
    return MMapIndexedDataset(str(path))


def test_split_by_hand():
    assert parse_split("949,50,1", 1000) == [(0, 949), (949, 999), (999, 1000)]
    assert parse_split("8/1/1", 10) == [(0, 8), (8, 9), (9, 10)]
    assert parse_split("1", 7) == [(0, 7), (7, 7), (7, 7)]
    with pytest.raises(ValueError, match="--split 'a,b'"):
        parse_split("a,b", 10)
    with pytest.raises(ValueError, match="non-negative weights"):
        parse_split("1,-1,0", 10)


def test_samples_cover_every_token_of_the_split_once_per_epoch(tmp_path):
    sizes = np.random.RandomState(1).randint(1, 60, size=40)
    indexed = _indexed(tmp_path / "d", sizes)
    ids = np.arange(5, 35)  # a split: documents 5..34
    seq_length = 16
    tokens_per_epoch = int(sizes[5:35].sum())
    num_samples = 3 * tokens_per_epoch // seq_length  # about three epochs
    dataset = GPT2Dataset("train", indexed, ids, num_samples, seq_length, seed=7, cache_dir=str(tmp_path))
    stream = np.concatenate([dataset.sample(k)["text"][:-1] for k in range(num_samples)])
    order = dataset.doc_idx
    assert len(order) % len(ids) == 0 and len(order) * 1.0 / len(ids) >= 3
    for epoch in range(len(order) // len(ids)):
        documents = order[epoch * len(ids):(epoch + 1) * len(ids)]
        assert sorted(documents.tolist()) == list(range(len(ids))), "each epoch is a permutation of the split"
        expected = np.concatenate([indexed[ids[d]] for d in documents])
        got = stream[epoch * tokens_per_epoch:(epoch + 1) * tokens_per_epoch]
        assert np.array_equal(got, expected[:len(got)])
    assert all(len(dataset[i]["text"]) == seq_length + 1 for i in range(len(dataset)))
    for k in range(num_samples - 1):
        assert dataset.sample(k)["text"][-1] == dataset.sample(k + 1)["text"][0], "labels run on into the next sample"
    assert len(set(dataset.shuffle_idx.tolist())) == num_samples, "no sample twice"
    assert all(np.array_equal(dataset[i]["text"], dataset.sample(int(dataset.shuffle_idx[i]))["text"])
               for i in range(num_samples))


def test_the_order_does_not_depend_on_the_number_of_samples(tmp_path):
    """A run extended with a larger --train-iters continues the same order; within an epoch (the
    samples whose first token lies in it) no sample comes twice, and the epoch comes whole first."""
    sizes = np.random.RandomState(2).randint(1, 60, size=40)
    indexed = _indexed(tmp_path / "d", sizes)
    tokens_per_epoch, seq_length = int(sizes.sum()), 16
    short, extended = (GPT2Dataset("train", indexed, np.arange(40), n, seq_length, seed=5, cache_dir=str(tmp_path))
                       for n in (50, 3 * tokens_per_epoch // seq_length))
    assert np.array_equal(extended.shuffle_idx[:50], short.shuffle_idx)
    first_epoch = -(-tokens_per_epoch // seq_length)
    assert sorted(extended.shuffle_idx[:first_epoch].tolist()) == list(range(first_epoch))
    assert not np.array_equal(extended.shuffle_idx[:first_epoch], np.arange(first_epoch)), "shuffled"
    assert all(np.array_equal(short[i]["text"], extended[i]["text"]) for i in range(50))


def test_index_is_deterministic_and_cached(tmp_path):
    indexed = _indexed(tmp_path / "d", [30] * 20)
    first = GPT2Dataset("train", indexed, np.arange(20), 50, 8, seed=3, cache_dir=str(tmp_path / "cache"))
    (cache,) = os.listdir(tmp_path / "cache")
    built = os.path.getmtime(tmp_path / "cache" / cache)
    again = GPT2Dataset("train", indexed, np.arange(20), 50, 8, seed=3, cache_dir=str(tmp_path / "cache"))
    assert os.path.getmtime(tmp_path / "cache" / cache) == built
    assert all(np.array_equal(first[i]["text"], again[i]["text"]) for i in range(50))
    other_seed = GPT2Dataset("train", indexed, np.arange(20), 50, 8, seed=4, cache_dir=str(tmp_path / "cache"))
    assert any(not np.array_equal(first[i]["text"], other_seed[i]["text"]) for i in range(50))


def test_blending_honours_weights_within_one_percent(tmp_path):
    small, large = _indexed(tmp_path / "a", [20] * 50, 1), _indexed(tmp_path / "b", [20] * 50, 2)
    parts = [GPT2Dataset("train", d, np.arange(50), 800, 8, seed=1, cache_dir=str(tmp_path)) for d in (small, large)]
    blend = BlendableDataset(parts, [0.3, 0.7], 1000)
    drawn = np.bincount(blend.dataset_index, minlength=2) / len(blend)
    assert abs(drawn[0] - 0.3) < 0.01 and abs(drawn[1] - 0.7) < 0.01
    prefix = blend.dataset_index[:100]
    assert abs((prefix == 0).mean() - 0.3) <= 0.01, "weights hold along the way, not only at the end"
    assert np.array_equal(blend[5]["text"], parts[blend.dataset_index[5]][int(blend.dataset_sample_index[5])]["text"])


def test_build_from_data_path_with_weights(tmp_path):
    _indexed(tmp_path / "a", [25] * 100, 1)
    _indexed(tmp_path / "b", [25] * 100, 2)
    train, valid, test = build_gpt2_datasets(["0.25", str(tmp_path / "a"), "0.75", str(tmp_path / "b")],
                                             "90,10,0", (500, 40, 0), 16, 1234)
    assert len(train) == 500 and len(valid) == 40 and test is None
    assert abs((train.dataset_index == 0).mean() - 0.25) < 0.01
    with pytest.raises(ValueError, match="expected one prefix, or weight-prefix pairs"):
        parse_data_path(["0.3", "a", "0.7"])
    with pytest.raises(ValueError, match="'heavy' is not a weight"):
        parse_data_path(["heavy", "a", "0.7", "b"])


def test_token_id_beyond_vocabulary_in_a_sample(tmp_path):
    indexed = _indexed(tmp_path / "d", [40] * 10, high=2000)
    dataset = GPT2Dataset("train", indexed, np.arange(10), 20, 16, seed=1, vocab_size=1000, cache_dir=str(tmp_path))
    with pytest.raises(TokenIdError, match=r"train sample \d+\): token id \d+ is outside the vocabulary \[0, 1000\)"):
        [dataset[i] for i in range(len(dataset))]
