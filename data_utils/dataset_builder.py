"""Train, valid and test datasets from --data-path and --split, blended by weight when there are several.

A dataset kind (GPT-2 packed samples, BERT sentence pairs) only says how to make one split of one
.bin/.idx prefix; splitting by documents, the number of samples each prefix contributes, and
blending live here once.
"""

import numpy as np

from .indexed_dataset import DatasetError

SPLIT_NAMES = ("train", "valid", "test")


def split_weights(split):
    """`--split 949,50,1` -> [949.0, 50.0, 1.0] (missing ones 0)."""
    try:
        weights = [float(w) for w in str(split).replace("/", ",").split(",")]
    except ValueError:
        raise DatasetError(f"--split {split!r}: expected up to three numbers such as 949,50,1") from None
    if not 1 <= len(weights) <= 3 or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise DatasetError(f"--split {split!r}: expected one to three non-negative weights with a positive sum")
    return weights + [0.0] * (3 - len(weights))


def parse_split(split, num_documents):
    """`--split 949,50,1` -> [(start, end)] document ranges of train, valid and test."""
    weights = split_weights(split)
    bounds = np.round(np.cumsum([0.0] + weights) / sum(weights) * num_documents).astype(np.int64)
    return [(int(bounds[i]), int(bounds[i + 1])) for i in range(3)]


def parse_data_path(values):
    """`--data-path A` or `--data-path 0.3 A 0.7 B` -> [(weight, prefix)]."""
    if len(values) == 1:
        return [(1.0, values[0])]
    if len(values) % 2:
        raise DatasetError(f"--data-path {' '.join(values)}: expected one prefix, or weight-prefix pairs")
    pairs = []
    for weight, prefix in zip(values[::2], values[1::2]):
        try:
            pairs.append((float(weight), prefix))
        except ValueError:
            raise DatasetError(f"--data-path: {weight!r} is not a weight (expected pairs such as 0.3 A 0.7 B)") from None
    return pairs


class BlendableDataset:
    """Samples drawn from several datasets in proportion to weights, deterministically.

    The j-th sample of dataset d is placed at time (j + 0.5) / w_d and the merged order is by time, so
    after any n samples each dataset has been drawn within one sample of n * w_d.
    """

    def __init__(self, datasets, weights, num_samples):
        weights = np.asarray(weights, dtype=np.float64)
        if len(datasets) != len(weights) or (weights <= 0).any():
            raise DatasetError("--data-path: every dataset needs a positive weight")
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
                raise DatasetError(f"blended dataset {d} has {len(dataset)} samples, {needed} are needed")

    def __len__(self):
        return len(self.dataset_index)

    def __getitem__(self, i):
        return self.datasets[self.dataset_index[i]][int(self.dataset_sample_index[i])]


def build_datasets(data_path, split, num_samples, make_dataset):
    """(train, valid, test), None where a split needs no samples or has weight 0 (--split 100,0,0: none).

    num_samples: (train, valid, test). make_dataset(split name, indexed dataset, first document, end
    document, number of samples) makes one split of one prefix. With several prefixes each split is a
    BlendableDataset drawing from them by weight (each prefix makes 0.5% more samples than its share,
    as Megatron-LM does, so the blend never runs short).
    """
    from .indexed_dataset import MMapIndexedDataset
    pairs = parse_data_path(data_path)
    weights = np.array([w for w, _ in pairs]) / sum(w for w, _ in pairs)
    per_split = [[] for _ in SPLIT_NAMES]
    for weight, (_, prefix) in zip(weights, pairs):
        indexed = MMapIndexedDataset(prefix)
        for s, (start, end) in enumerate(parse_split(split, indexed.num_documents)):
            if num_samples[s] == 0 or split_weights(split)[s] == 0:
                continue
            if start == end:
                raise DatasetError(f"--split {split}: the {SPLIT_NAMES[s]} split of {prefix} has no documents but "
                                 f"{num_samples[s]} samples are needed; give that split a larger weight")
            wanted = num_samples[s] if len(pairs) == 1 else int(np.ceil(num_samples[s] * weight * 1.005)) + 1
            per_split[s].append(make_dataset(SPLIT_NAMES[s], indexed, start, end, wanted))
    return [None if not datasets else datasets[0] if len(datasets) == 1
            else BlendableDataset(datasets, weights, num_samples[s]) for s, datasets in enumerate(per_split)]
