"""GPT-2 training samples: documents packed into sequences of seq_length + 1 tokens.

Documents are concatenated, in an order shuffled per epoch, into one token stream; sample i is
stream[i * seq_length : (i + 1) * seq_length + 1] (inputs are its first seq_length tokens, labels its
last seq_length), so the inputs of one epoch's samples cover each token of the split exactly once
and samples run across document boundaries. Samples are shuffled within their epoch (a sample belongs
to the epoch its first token is in), each epoch by its own seed: the order of the first n samples
does not depend on num_samples, so a run extended with a larger --train-iters continues the same
order, and no sample comes twice before its epoch ends. The three index arrays (document order,
sample starts, sample shuffle) depend only on the data, the split, seq_length, num_samples and the
seed; they are built once and cached next to the data.
"""

import numpy as np

from .atomic import cached_index
from .dataset_builder import build_datasets
from .indexed_dataset import DatasetError, check_token_ids


def _epoch_rng(seed, epoch, what):
    return np.random.RandomState([seed, epoch, what])


def _build_index(sizes, num_samples, seq_length, seed):
    """{doc_idx, sample_starts, shuffle_idx}: see the module docstring."""
    tokens_per_epoch = int(sizes.sum())
    if tokens_per_epoch <= 1:
        raise DatasetError("the split has no tokens to sample from")

    def first_sample(epoch):  # the first sample whose first token lies in `epoch`
        return -(-epoch * tokens_per_epoch // seq_length)
    num_epochs = 1  # of samples: the last one is complete, so extending num_samples keeps the order
    while first_sample(num_epochs) < num_samples:
        num_epochs += 1
    num_built = first_sample(num_epochs)
    token_epochs = -(-(num_built * seq_length + 1) // tokens_per_epoch)  # the last sample's labels run on
    doc_idx = np.concatenate([_epoch_rng(seed, e, 0).permutation(len(sizes)) for e in range(token_epochs)])
    ends = np.cumsum(sizes[doc_idx], dtype=np.int64)
    starts = np.arange(num_built + 1, dtype=np.int64) * seq_length
    position = np.searchsorted(ends, starts, side="right")
    offset = starts - np.concatenate([[0], ends])[position]
    sample_starts = np.stack([position, offset], axis=1)
    shuffle_idx = np.concatenate([first_sample(e) + _epoch_rng(seed, e, 1).permutation(
        first_sample(e + 1) - first_sample(e)) for e in range(num_epochs)])[:num_samples]
    return {"doc_idx": doc_idx, "sample_starts": sample_starts, "shuffle_idx": shuffle_idx}


class GPT2Dataset:
    """`dataset[i]` -> {"text": int64 array of seq_length + 1 tokens}, for i < num_samples.

    `sequence_ids` are the sequences (documents) of the split in the indexed dataset.
    """

    def __init__(self, name, indexed_dataset, sequence_ids, num_samples, seq_length, seed,
                 vocab_size=None, cache_dir=None):
        self.name, self.indexed_dataset, self.seq_length = name, indexed_dataset, seq_length
        self.sequence_ids = np.asarray(sequence_ids, dtype=np.int64)
        self.vocab_size = vocab_size
        if len(self.sequence_ids) == 0:
            raise DatasetError(f"{indexed_dataset.prefix}: the {name} split has no documents; change --split")
        name_in_cache = (f"{name}_indexmap_{self.sequence_ids[0]}-{self.sequence_ids[-1]}seqs_{num_samples}ns_"
                         f"{seq_length}sl_{seed}s_epochs")
        index = cached_index(indexed_dataset, cache_dir, name_in_cache, lambda: _build_index(
            indexed_dataset.sizes[self.sequence_ids].astype(np.int64), num_samples, seq_length, seed))
        self.doc_idx, self.sample_starts, self.shuffle_idx = index["doc_idx"], index["sample_starts"], index["shuffle_idx"]

    def __len__(self):
        return len(self.shuffle_idx)

    def __getitem__(self, i):
        return self.sample(int(self.shuffle_idx[i]))

    def sample(self, k):
        """The k-th sample of the token stream, before shuffling."""
        (first, first_offset), (last, last_offset) = self.sample_starts[k], self.sample_starts[k + 1]
        get = self.indexed_dataset.get

        def sequence(position):
            return self.sequence_ids[self.doc_idx[position]]
        if first == last:
            pieces = [get(sequence(first), first_offset, last_offset - first_offset + 1)]
        else:
            pieces = ([get(sequence(first), first_offset)] + [get(sequence(p)) for p in range(first + 1, last)]
                      + [get(sequence(last), 0, last_offset + 1)])
        tokens = np.concatenate(pieces).astype(np.int64)
        check_token_ids(tokens, self.vocab_size, f"{self.indexed_dataset.prefix} ({self.name} sample {k})")
        return {"text": tokens}


def build_gpt2_datasets(data_path, split, num_samples, seq_length, seed, vocab_size=None, cache_dir=None):
    """GPT-2 train, valid and test datasets from `--data-path` values (see dataset_builder.build_datasets)."""
    def make(name, indexed, first_document, end_document, samples):
        sequences = np.arange(indexed.doc_idx[first_document], indexed.doc_idx[end_document])
        return GPT2Dataset(name, indexed, sequences, samples, seq_length, seed, vocab_size, cache_dir)
    return build_datasets(data_path, split, num_samples, make)
