"""BERT training samples: sentence pairs with a next-sentence or sentence-order label, masked 15%.

Reads sentence-level indexed data (scripts/preprocess_data.py --split-sentences): each sequence is a
sentence and the document index groups them. A sample is a run of consecutive sentences of one
document, built greedily up to a target length (shorter with probability short_seq_prob), cut into
segment A and segment B at a random sentence boundary. Next-sentence prediction: with probability
one half B is replaced by sentences of another document (label 1). Sentence-order prediction
(sentence_order=True): with probability one half A and B swap (label 1). Masking as in BERT: 15% of
the non-special tokens, at most max_preds_per_seq, of which 80% become [MASK], 10% a random token and
10% stay; lm_positions lists the masked positions, max_preds_per_seq long (see lm_positions), so that
the model computes its masked-LM head there only. Everything a sample draws comes from a generator
seeded by (seed, sample index), so a sample is the same whatever order it is read in. Samples are
built and shuffled an epoch at a time, each epoch with its own seed, so the first n samples do not
depend on how many are asked for (a run extended with a larger --train-iters continues the same order). A random segment always comes from
another document; documents without sentences are skipped.
"""

import numpy as np

from .atomic import cached_index
from .dataset_builder import build_datasets
from .indexed_dataset import DatasetError, check_token_ids


def max_predictions(seq_length, masked_lm_prob, max_preds_per_seq=None):
    """The most masked positions a sample may have: --max-preds-per-seq, else ceil(seq x probability)
    (Google's create_pretraining_data writes at most round(seq x probability), never more)."""
    return max_preds_per_seq or int(np.ceil(seq_length * masked_lm_prob))


def lm_positions(loss_mask, count, where):
    """The positions where loss_mask is set, in order, then the first unset position repeated up to
    `count` entries: a fixed shape, so the model gathers the masked positions without reading the
    batch on the host, and the padding entries carry no loss. More masked positions than `count` is
    an error naming `where`."""
    masked = np.flatnonzero(loss_mask)
    if len(masked) > count:
        raise DatasetError(f"{where}: {len(masked)} masked positions, more than the {count} a sample may have; "
                           f"pass --max-preds-per-seq {len(masked)} or more (the value the data was written with)")
    return np.pad(masked, (0, count - len(masked)), constant_values=int(np.argmin(loss_mask))).astype(np.int64)


def _epoch_rows(sizes, doc_idx, documents, max_tokens, short_seq_prob, min_sentences, rng):
    """[first sentence, end sentence, target length] rows of one pass over the documents."""
    rows = []
    for doc in documents:
        first, end = int(doc_idx[doc]), int(doc_idx[doc + 1])
        if end - first < min_sentences:
            continue
        target = rng.randint(2, max_tokens + 1) if rng.random_sample() < short_seq_prob else max_tokens
        start, length = first, 0
        for sentence in range(first, end):
            length += int(sizes[sentence])
            if (length >= target or sentence == end - 1) and sentence + 1 - start >= min_sentences:
                rows.append((start, sentence + 1, target))
                target = rng.randint(2, max_tokens + 1) if rng.random_sample() < short_seq_prob else max_tokens
                start, length = sentence + 1, 0
    return rows


def _samples_mapping(sizes, doc_idx, documents, num_samples, max_tokens, short_seq_prob, min_sentences, seed):
    """Rows (see _epoch_rows) of as many epochs as num_samples needs, each epoch shuffled by its own seed."""
    epochs = []
    while sum(map(len, epochs)) < num_samples:
        epoch = len(epochs)
        rows = _epoch_rows(sizes, doc_idx, documents, max_tokens, short_seq_prob, min_sentences,
                           np.random.RandomState([seed, epoch, 0]))
        if not rows:
            raise DatasetError(f"no document has {min_sentences} or more sentences: BERT sentence pairs need "
                             "sentence-level data (scripts/preprocess_data.py --split-sentences)")
        rows = np.asarray(rows, dtype=np.int64)
        epochs.append(rows[np.random.RandomState([seed, epoch, 1]).permutation(len(rows))])
    return np.concatenate(epochs)[:num_samples]


class BertSentencePairDataset:
    """`dataset[i]` -> dict of text, types, labels, loss_mask, padding_mask (max_seq_length each), lm_positions
    (max_preds long) and is_random."""

    def __init__(self, name, indexed_dataset, documents, num_samples, max_seq_length, seed, tokenizer,
                 masked_lm_prob=0.15, max_preds_per_seq=None, short_seq_prob=0.1, binary_head=True,
                 sentence_order=False, cache_dir=None):
        self.name, self.indexed, self.seed = name, indexed_dataset, seed
        self.max_seq_length, self.masked_lm_prob = max_seq_length, masked_lm_prob
        self.max_preds = max_predictions(max_seq_length, masked_lm_prob, max_preds_per_seq)
        self.binary_head, self.sentence_order = binary_head, sentence_order
        self.cls, self.sep, self.mask_id, self.pad = tokenizer.cls, tokenizer.sep, tokenizer.mask, tokenizer.pad
        self.vocab_size = tokenizer.vocab_size
        self.documents = np.asarray(documents, dtype=np.int64)
        doc_idx = indexed_dataset.doc_idx
        self.with_sentences = self.documents[doc_idx[self.documents + 1] > doc_idx[self.documents]]
        if binary_head and not sentence_order and len(self.with_sentences) < 2:
            raise DatasetError(f"{indexed_dataset.prefix}: the {name} split has {len(self.with_sentences)} document(s) "
                             "with sentences; next-sentence prediction takes its random segments from other "
                             "documents: give the split more documents (--split) or use --sentence-order-prediction")
        name_in_cache = (f"{name}_bert_{self.documents[0]}-{self.documents[-1]}docs_{num_samples}ns_"
                         f"{max_seq_length}msl_{short_seq_prob}ssp_{int(binary_head)}bh_{seed}s_epochs")
        self.mapping = cached_index(indexed_dataset, cache_dir, name_in_cache, lambda: {"mapping": _samples_mapping(
            indexed_dataset.sizes, doc_idx, self.documents, num_samples, max_seq_length - 3,
            short_seq_prob, 2 if binary_head else 1, seed)})["mapping"]

    def __len__(self):
        return len(self.mapping)

    def _random_other_segment(self, rng, exclude_sentence, length):
        """Sentences from a random point of a random other document, up to `length` tokens."""
        doc_idx = self.indexed.doc_idx
        own = int(np.searchsorted(doc_idx, exclude_sentence, side="right")) - 1
        choice = rng.randint(len(self.with_sentences) - 1)
        choice += int(choice >= np.searchsorted(self.with_sentences, own))
        doc = int(self.with_sentences[choice])
        start = rng.randint(doc_idx[doc], doc_idx[doc + 1])
        pieces, total = [], 0
        for sentence in range(start, int(doc_idx[doc + 1])):
            pieces.append(self.indexed[sentence])
            total += len(pieces[-1])
            if total >= length:
                break
        return np.concatenate(pieces)

    def __getitem__(self, i):
        rng = np.random.RandomState((self.seed * 1_000_003 + int(i)) % (2 ** 32))
        first, end, target = (int(v) for v in self.mapping[i])
        sentences = [self.indexed[s] for s in range(first, end)]
        split = rng.randint(1, len(sentences)) if len(sentences) > 1 else 1
        a = np.concatenate(sentences[:split])
        b = np.concatenate(sentences[split:]) if split < len(sentences) else np.zeros(0, dtype=a.dtype)
        is_random = 0
        if self.binary_head and rng.random_sample() < 0.5:
            is_random = 1
            if self.sentence_order:
                a, b = b, a
            else:
                b = self._random_other_segment(rng, first, max(target - len(a), 1))
        a, b = _truncate_pair(a.astype(np.int64), b.astype(np.int64), target, rng)
        check_token_ids(np.concatenate([a, b]), self.vocab_size, f"{self.indexed.prefix} ({self.name} sample {i})")
        return self._masked_sample(a, b, is_random, rng)

    def _masked_sample(self, a, b, is_random, rng):
        tokens = np.concatenate([[self.cls], a, [self.sep]] + ([b, [self.sep]] if len(b) else [])).astype(np.int64)
        types = np.zeros(len(tokens), dtype=np.int64)
        types[len(a) + 2:] = 1
        candidates = np.flatnonzero((tokens != self.cls) & (tokens != self.sep))
        count = min(self.max_preds, max(1, int(round(len(candidates) * self.masked_lm_prob))), len(candidates))
        positions = np.sort(rng.choice(candidates, size=count, replace=False))
        labels = np.full(self.max_seq_length, -1, dtype=np.int64)
        labels[positions] = tokens[positions]
        draw = rng.random_sample(count)
        masked = tokens.copy()
        masked[positions[draw < 0.8]] = self.mask_id
        random_positions = positions[draw >= 0.9]
        masked[random_positions] = rng.randint(0, self.vocab_size, size=len(random_positions))
        loss_mask = np.zeros(self.max_seq_length, dtype=np.int64)
        loss_mask[positions] = 1
        padding = self.max_seq_length - len(tokens)
        return {"text": np.pad(masked, (0, padding), constant_values=self.pad),
                "types": np.pad(types, (0, padding)),
                "padding_mask": np.pad(np.ones(len(tokens), dtype=np.int64), (0, padding)),
                "labels": labels, "loss_mask": loss_mask, "is_random": np.int64(is_random),
                "lm_positions": lm_positions(loss_mask, self.max_preds, self.name)}


def _truncate_pair(a, b, max_tokens, rng):
    """Trim the longer segment, from a random end, until the pair fits in max_tokens; keep one token each."""
    while len(a) + len(b) > max_tokens:
        if len(a) >= len(b) and len(a) > 1 or len(b) <= 1:
            a = a[1:] if rng.random_sample() < 0.5 else a[:-1]
        else:
            b = b[1:] if rng.random_sample() < 0.5 else b[:-1]
    return a, b


def build_bert_datasets(data_path, split, num_samples, max_seq_length, seed, tokenizer, cache_dir=None, **options):
    """BERT train, valid and test datasets from sentence-level `--data-path` values (see
    dataset_builder.build_datasets); options go to BertSentencePairDataset."""
    def make(name, indexed, first_document, end_document, samples):
        return BertSentencePairDataset(name, indexed, np.arange(first_document, end_document), samples,
                                       max_seq_length, seed, tokenizer, cache_dir=cache_dir, **options)
    return build_datasets(data_path, split, num_samples, make)
