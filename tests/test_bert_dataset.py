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
        assert np.array_equal(sample["lm_positions"][:len(positions)], positions) and len(sample["lm_positions"]) == 20
        assert not sample["loss_mask"][sample["lm_positions"][len(positions):]].any(), "the list's padding has no loss"
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


def _documents_by_range(path, sentence_counts):
    """Document d's tokens lie in [2000 + 5000 d, 3000 + 5000 d); a count of 0 is an empty document."""
    rng = np.random.RandomState(0)
    builder = IndexedDatasetBuilder(str(path), np.uint16, 30522)
    for d, count in enumerate(sentence_counts):
        builder.add_document([rng.randint(2000 + 5000 * d, 3000 + 5000 * d, size=rng.randint(4, 12))
                              for _ in range(count)])
    builder.finalize()
    return MMapIndexedDataset(str(path))


def test_a_random_segment_comes_from_another_document(tmp_path, tokenizer):
    indexed = _documents_by_range(tmp_path / "three", [40, 0, 3, 40])
    dataset = BertSentencePairDataset("train", indexed, np.arange(4), 400, 48, 1, tokenizer)
    randoms = 0
    for i in range(len(dataset)):
        sample = dataset[i]
        a, b = (set(((segment - 2000) // 5000).tolist()) for segment in _segments(sample, tokenizer))
        assert len(a) == 1 and len(b) == 1, "each segment lies in one document"
        assert (a != b) == bool(sample["is_random"]), f"sample {i}"
        randoms += int(sample["is_random"])
    assert randoms > 100


def test_a_split_with_one_document_is_a_clear_error(tmp_path, tokenizer):
    indexed = _documents_by_range(tmp_path / "one", [30, 0])
    with pytest.raises(ValueError, match="the train split has 1 document.s. with sentences; next-sentence prediction"):
        BertSentencePairDataset("train", indexed, np.arange(2), 50, 48, 1, tokenizer)
    swapped = BertSentencePairDataset("train", indexed, np.arange(2), 50, 48, 1, tokenizer, sentence_order=True)
    assert len(swapped) == 50 and all(swapped[i]["text"][0] == tokenizer.cls for i in range(50))


def test_more_samples_continue_the_same_order(sentences, tokenizer):
    """A run extended with a larger --train-iters reads the same samples first."""
    few = BertSentencePairDataset("train", sentences, np.arange(sentences.num_documents), 100, MAX_SEQ, 9, tokenizer)
    many = BertSentencePairDataset("train", sentences, np.arange(sentences.num_documents), 5000, MAX_SEQ, 9, tokenizer)
    assert np.array_equal(many.mapping[:100], few.mapping)
