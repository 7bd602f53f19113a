"""BERT sentence pairs on real sentence-split text: layout, 15% masking with 80/10/10, NSP and SOP labels."""

import numpy as np
import pytest

from data_utils.bert_dataset import BertSentencePairDataset
from data_utils.indexed_dataset import IndexedDatasetBuilder, MMapIndexedDataset
from data_utils.sentences import split_sentences
from data_utils.tokenization import make_tokenizer

MAX_SEQ, SAMPLES = 96, 600


@pytest.fixture(scope="module")
def tokenizer(bert_vocab_file):
    return make_tokenizer("BertWordPieceLowerCase", vocab_file=bert_vocab_file)


@pytest.fixture(scope="module")
def sentences(tmp_path_factory, tokenizer, sample_texts):
    prefix = str(tmp_path_factory.mktemp("bert") / "jargon_text_sentence")
    builder = IndexedDatasetBuilder(prefix, np.uint16, tokenizer.vocab_size)
    for text in sample_texts[:400]:
        builder.add_document([ids for ids in map(tokenizer.tokenize, split_sentences(text)) if ids])
    builder.finalize()
    return MMapIndexedDataset(prefix)


def _dataset(sentences, tokenizer, **options):
    return BertSentencePairDataset("train", sentences, np.arange(sentences.num_documents), SAMPLES, MAX_SEQ, 1234,
                                   tokenizer, **options)


def _find(stream, segment):
    """Start of `segment` in `stream` (both int arrays), or -1."""
    candidates = np.flatnonzero(stream[:len(stream) - len(segment) + 1] == segment[0])
    return next((int(c) for c in candidates if np.array_equal(stream[c:c + len(segment)], segment)), -1)


def _segments(sample, tokenizer):
    """The two segments with masked tokens restored to their originals."""
    tokens = np.where(sample["loss_mask"] == 1, sample["labels"], sample["text"])[sample["padding_mask"] == 1]
    seps = np.flatnonzero(tokens == tokenizer.sep)
    return tokens[1:seps[0]], tokens[seps[0] + 1:seps[1]]


def test_layout_of_a_pair(sentences, tokenizer):
    dataset = _dataset(sentences, tokenizer)
    for i in range(0, SAMPLES, 7):
        sample = dataset[i]
        real = int(sample["padding_mask"].sum())
        assert all(len(sample[k]) == MAX_SEQ for k in ("text", "types", "labels", "loss_mask", "padding_mask"))
        assert sample["padding_mask"][:real].all() and not sample["padding_mask"][real:].any()
        assert sample["text"][0] == tokenizer.cls and (sample["text"][real:] == tokenizer.pad).all()
        restored = np.where(sample["loss_mask"] == 1, sample["labels"], sample["text"])
        seps = np.flatnonzero(restored[:real] == tokenizer.sep)
        assert len(seps) == 2 and seps[1] == real - 1
        assert (sample["types"][:seps[0] + 1] == 0).all() and (sample["types"][seps[0] + 1:real] == 1).all()
        assert not sample["types"][real:].any()
        assert np.array_equal(sample["loss_mask"] == 1, sample["labels"] >= 0)
        assert sample["loss_mask"][[0, seps[0], seps[1]]].sum() == 0, "special tokens are never masked"


def test_masking_fifteen_percent_eighty_ten_ten(sentences, tokenizer):
    dataset = _dataset(sentences, tokenizer, max_preds_per_seq=20)
    masked = candidates = as_mask = unchanged = 0
    for i in range(SAMPLES):
        sample = dataset[i]
        positions = np.flatnonzero(sample["loss_mask"])
        assert 1 <= len(positions) <= 20
        masked += len(positions)
        candidates += int(sample["padding_mask"].sum()) - 3
        as_mask += int((sample["text"][positions] == tokenizer.mask).sum())
        unchanged += int((sample["text"][positions] == sample["labels"][positions]).sum())
    assert abs(masked / candidates - 0.15) < 0.01
    assert abs(as_mask / masked - 0.8) < 0.03
    assert abs(unchanged / masked - 0.1) < 0.03


def test_next_sentence_labels(sentences, tokenizer):
    dataset = _dataset(sentences, tokenizer)
    labels = [int(dataset[i]["is_random"]) for i in range(SAMPLES)]
    assert 0.45 < np.mean(labels) < 0.55
    for i in range(0, SAMPLES, 5):
        a, b = _segments(dataset[i], tokenizer)
        first, end, _ = dataset.mapping[i]
        stream = np.concatenate([sentences[s] for s in range(first, end)]).astype(np.int64)
        assert _find(stream, a) >= 0, "segment A is a run of the sample's document"
        if not labels[i]:
            assert _find(stream, a) < _find(stream, b), "a true next segment follows A in the document"


def test_sentence_order_labels(sentences, tokenizer):
    dataset = _dataset(sentences, tokenizer, sentence_order=True)
    swapped = 0
    for i in range(0, SAMPLES, 3):
        sample = dataset[i]
        a, b = _segments(sample, tokenizer)
        first, end, _ = dataset.mapping[i]
        stream = np.concatenate([sentences[s] for s in range(first, end)]).astype(np.int64)
        where_a, where_b = _find(stream, a), _find(stream, b)
        assert where_a >= 0 and where_b >= 0, "both segments come from the sample's document"
        assert (where_a > where_b) == bool(sample["is_random"])
        swapped += int(sample["is_random"])
    assert 0.4 < swapped / len(range(0, SAMPLES, 3)) < 0.6


def test_samples_are_deterministic(sentences, tokenizer, tmp_path):
    first = _dataset(sentences, tokenizer)
    second = _dataset(sentences, tokenizer)
    for i in (0, 17, SAMPLES - 1):
        assert all(np.array_equal(first[i][k], second[i][k]) for k in first[i])
