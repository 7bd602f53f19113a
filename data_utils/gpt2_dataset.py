"""GPT-2 training samples: documents packed into sequences of seq_length + 1 tokens.

Documents are concatenated, in an order shuffled per epoch, into one token stream; sample i is
stream[i * seq_length : (i + 1) * seq_length + 1] (inputs are its first seq_length tokens, labels its
last seq_length), so the inputs of one epoch's samples cover each token of the split exactly once
and samples run across document boundaries. The three index arrays (document order, sample starts,
sample shuffle) depend only on the data, the split, seq_length, num_samples and the seed; they are
built once and cached next to the data.
"""

import numpy as np

from .atomic import cached_index
from .indexed_dataset import check_token_ids


def parse_split(split, num_documents):
    """`--split 949,50,1` -> [(start, end)] document ranges of train, valid and test."""
    try:
        weights = [float(w) for w in str(split).replace("/", ",").split(",")]
    except ValueError:
        raise ValueError(f"--split {split!r}: expected up to three numbers such as 949,50,1") from None
    if not 1 <= len(weights) <= 3 or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"--split {split!r}: expected one to three non-negative weights with a positive sum")
    weights += [0.0] * (3 - len(weights))
    bounds = np.round(np.cumsum([0.0] + weights) / sum(weights) * num_documents).astype(np.int64)
    return [(int(bounds[i]), int(bounds[i + 1])) for i in range(3)]


def _build_index(sizes, num_samples, seq_length, rng):
    """{doc_idx, sample_starts, shuffle_idx}: see the module docstring."""
    tokens_per_epoch = int(sizes.sum())
    if tokens_per_epoch <= 1:
        raise ValueError("the split has no tokens to sample from")
    num_epochs = 1
    while (num_epochs * tokens_per_epoch - 1) // seq_length < num_samples:
        num_epochs += 1
    doc_idx = np.concatenate([rng.permutation(len(sizes)) for _ in range(num_epochs)])
    ends = np.cumsum(sizes[doc_idx], dtype=np.int64)
    starts = np.arange(num_samples + 1, dtype=np.int64) * seq_length
    position = np.searchsorted(ends, starts, side="right")
    offset = starts - np.concatenate([[0], ends])[position]
    sample_starts = np.stack([position, offset], axis=1)
    shuffle_idx = rng.permutation(num_samples)
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
            raise ValueError(f"{indexed_dataset.prefix}: the {name} split has no documents; change --split")
        name_in_cache = (f"{name}_indexmap_{self.sequence_ids[0]}-{self.sequence_ids[-1]}seqs_{num_samples}ns_"
                         f"{seq_length}sl_{seed}s")
        index = cached_index(indexed_dataset, cache_dir, name_in_cache, lambda: _build_index(
            indexed_dataset.sizes[self.sequence_ids].astype(np.int64), num_samples, seq_length,
            np.random.RandomState(seed)))
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


class BlendableDataset:
    """Samples drawn from several datasets in proportion to weights, deterministically.

    The j-th sample of dataset d is placed at time (j + 0.5) / w_d and the merged order is by time, so
    after any n samples each dataset has been drawn within one sample of n * w_d.
    """

    def __init__(self, datasets, weights, num_samples):
        weights = np.asarray(weights, dtype=np.float64)
        if len(datasets) != len(weights) or (weights <= 0).any():
            raise ValueError("--data-path: every dataset needs a positive weight")
        weights = weights / weights.sum()
        self.datasets = datasets
        counts = [int(np.ceil(w * num_samples)) + 1 for w in weights]
        times = np.concatenate([(np.arange(c) + 0.5) / w for c, w in zip(counts, weights)])
        which = np.concatenate([np.full(c, d, dtype=np.int64) for d, c in enumerate(counts)])
        local = np.concatenate([np.arange(c, dtype=np.int64) for c in counts])
        order = np.argsort(times, kind="stable")[:num_samples]
        self.dataset_index, self.dataset_sample_index = which[order], local[order]
        for d, dataset in enumerate(datasets):
            needed = int((self.dataset_index == d).sum())
            if needed > len(dataset):
                raise ValueError(f"blended dataset {d} has {len(dataset)} samples, {needed} are needed")

    def __len__(self):
        return len(self.dataset_index)

    def __getitem__(self, i):
        return self.datasets[self.dataset_index[i]][int(self.dataset_sample_index[i])]


def parse_data_path(values):
    """`--data-path A` or `--data-path 0.3 A 0.7 B` -> [(weight, prefix)]."""
    if len(values) == 1:
        return [(1.0, values[0])]
    if len(values) % 2:
        raise ValueError(f"--data-path {' '.join(values)}: expected one prefix, or weight-prefix pairs")
    pairs = []
    for weight, prefix in zip(values[::2], values[1::2]):
        try:
            pairs.append((float(weight), prefix))
        except ValueError:
            raise ValueError(f"--data-path: {weight!r} is not a weight (expected pairs such as 0.3 A 0.7 B)") from None
    return pairs


def build_gpt2_datasets(data_path, split, num_samples, seq_length, seed, vocab_size=None, cache_dir=None):
    """Train, valid and test datasets (None where a split gets no samples) from `--data-path` values.

    num_samples: (train, valid, test). Each prefix is split by documents; with several prefixes each
    split is a BlendableDataset drawing from them by weight.
    """
    from .indexed_dataset import MMapIndexedDataset
    pairs = parse_data_path(data_path)
    weights = np.array([w for w, _ in pairs]) / sum(w for w, _ in pairs)
    per_split = [[] for _ in range(3)]
    for weight, (_, prefix) in zip(weights, pairs):
        indexed = MMapIndexedDataset(prefix)
        for s, (start, end) in enumerate(parse_split(split, indexed.num_documents)):
            wanted = num_samples[s] if len(pairs) == 1 or num_samples[s] == 0 else \
                int(np.ceil(num_samples[s] * weight * 1.005)) + 1
            if wanted == 0 or start == end:
                per_split[s].append(None)
                continue
            ids = np.arange(indexed.doc_idx[start], indexed.doc_idx[end])
            per_split[s].append(GPT2Dataset(("train", "valid", "test")[s], indexed, ids, wanted, seq_length, seed,
                                            vocab_size, cache_dir))
    result = []
    for s, datasets in enumerate(per_split):
        if num_samples[s] == 0:
            result.append(None)
        elif any(d is None for d in datasets):
            raise ValueError(f"--split {split}: the {('train', 'valid', 'test')[s]} split of some --data-path "
                             f"prefix has no documents but {num_samples[s]} samples are needed")
        else:
            result.append(datasets[0] if len(datasets) == 1 else BlendableDataset(datasets, weights, num_samples[s]))
    return result
