"""BERT samples from the TFRecord files of Google's create_pretraining_data.py (--use-tfrecords), read
without TensorFlow.

Each record is a tf.train.Example: input_ids, input_mask and segment_ids (max_seq_length each,
zero-padded), masked_lm_positions, masked_lm_ids and masked_lm_weights (max_predictions_per_seq each,
weight 0 on padding) and next_sentence_labels (1: segment B is a random sentence). The masking was done
when the file was written, so a sample is exactly what its record holds. A file's records are indexed
once (byte offsets, cached as `{file}.offsets.npz` beside it or under --data-cache-dir); --split cuts
the records of all files, in order, into train, valid and test, and each split is read in a shuffled
order, an epoch at a time with its own seed, as the other datasets are. The payload's CRC32C is
checked on every read.
"""

import os
import struct

import numpy as np

from .atomic import save_npz_atomically
from .bert_dataset import lm_positions
from .dataset_builder import SPLIT_NAMES, parse_split

FEATURES = ("input_ids", "input_mask", "segment_ids", "masked_lm_positions", "masked_lm_ids", "masked_lm_weights",
            "next_sentence_labels")


def _masked_crc(data):
    import crc32c
    crc = crc32c.crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def record_offsets(path, cache_dir=None):
    """Byte offsets of the records of a TFRecord file (cached while newer than the file)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--train-data {path}: no such TFRecord file")
    cache = os.path.join(cache_dir or os.path.dirname(os.path.abspath(path)), os.path.basename(path) + ".offsets.npz")
    if os.path.isfile(cache) and os.path.getmtime(cache) >= os.path.getmtime(path):
        with np.load(cache) as cached:
            return cached["offsets"]
    offsets, size = [], os.path.getsize(path)
    with open(path, "rb") as f:
        while f.tell() < size:
            offsets.append(f.tell())
            header = f.read(12)
            if len(header) < 12:
                raise ValueError(f"{path}: record {len(offsets) - 1} at byte {offsets[-1]} is cut short; is it a "
                                 "TFRecord file (uncompressed)?")
            f.seek(struct.unpack("<Q", header[:8])[0] + 4, os.SEEK_CUR)
        if f.tell() != size:
            raise ValueError(f"{path}: the last record runs past the end of the file (a partial copy?)")
    offsets = np.asarray(offsets, dtype=np.int64)
    save_npz_atomically(cache, offsets=offsets)
    return offsets


def read_record(fd, path, offset):
    """{feature: numpy array} of the record at `offset` of an open file descriptor (os.pread: safe to share
    with data-loader workers)."""
    from tfrecord import example_pb2
    length = struct.unpack("<Q", os.pread(fd, 8, offset))[0]
    data = os.pread(fd, length + 4, offset + 12)
    if len(data) != length + 4 or struct.unpack("<I", data[length:])[0] != _masked_crc(data[:length]):
        raise ValueError(f"{path}: the record at byte {offset} fails its CRC32C check (a damaged file?)")
    features = example_pb2.Example.FromString(data[:length]).features.feature
    missing = [name for name in FEATURES if name not in features]
    if missing:
        raise ValueError(f"{path}: the record at byte {offset} has no {', '.join(missing)}; --use-tfrecords reads "
                         "the files of Google BERT's create_pretraining_data.py")
    return {name: np.asarray(features[name].float_list.value if name == "masked_lm_weights"
                             else features[name].int64_list.value) for name in FEATURES}


def bert_sample(record, seq_length, vocab_size, max_preds, where):
    """Our BERT sample (bert_dataset.py's keys) from a record's features."""
    tokens = record["input_ids"].astype(np.int64)
    if len(tokens) != seq_length:
        raise ValueError(f"{where}: samples of {len(tokens)} tokens; train with --seq-length {len(tokens)} "
                         "(the max_seq_length the file was written with)")
    if tokens.max(initial=0) >= vocab_size:
        raise ValueError(f"{where}: token id {tokens.max()} is outside the vocabulary ({vocab_size} tokens); pass "
                         "the vocabulary the file was written with (--vocab-file or --tokenizer-model-type)")
    real = record["masked_lm_weights"] > 0
    positions = record["masked_lm_positions"][real].astype(np.int64)
    labels = np.full(seq_length, -1, dtype=np.int64)
    labels[positions] = record["masked_lm_ids"][real]
    loss_mask = np.zeros(seq_length, dtype=np.int64)
    loss_mask[positions] = 1
    return {"text": tokens, "types": record["segment_ids"].astype(np.int64),
            "padding_mask": record["input_mask"].astype(np.int64), "labels": labels, "loss_mask": loss_mask,
            "is_random": np.int64(record["next_sentence_labels"][0]),
            "lm_positions": lm_positions(loss_mask, max_preds, where)}


class TFRecordBertDataset:
    """num_samples samples of the records [first, end) of the files' concatenation, shuffled per epoch."""

    def __init__(self, name, files, offsets, first, end, num_samples, seq_length, seed, vocab_size, max_preds):
        self.name, self.files, self.offsets = name, files, offsets
        self.starts = np.cumsum([0] + [len(o) for o in offsets])
        self.first, self.count = first, end - first
        self.num_samples, self.seq_length, self.seed, self.vocab_size = num_samples, seq_length, seed, vocab_size
        self.max_preds = max_preds
        self._orders, self._fds = {}, {}

    def __len__(self):
        return self.num_samples

    def _order(self, epoch):
        if epoch not in self._orders:
            self._orders = {epoch: np.random.RandomState([self.seed, epoch]).permutation(self.count)}
        return self._orders[epoch]

    def __getitem__(self, i):
        epoch, k = divmod(int(i), self.count)
        record = self.first + int(self._order(epoch)[k])
        f = int(np.searchsorted(self.starts, record, side="right")) - 1
        path, offset = self.files[f], int(self.offsets[f][record - self.starts[f]])
        if f not in self._fds:
            self._fds[f] = os.open(path, os.O_RDONLY)
        return bert_sample(read_record(self._fds[f], path, offset), self.seq_length, self.vocab_size, self.max_preds,
                           f"{path} (record at byte {offset})")


def build_tfrecord_datasets(files, split, num_samples, seq_length, seed, vocab_size, max_preds, cache_dir=None):
    """(train, valid, test) TFRecordBertDataset, None where a split needs no samples. max_preds: the most
    masked positions a record may have (bert_dataset.max_predictions)."""
    offsets = [record_offsets(path, cache_dir) for path in files]
    total = sum(len(o) for o in offsets)
    datasets = []
    for s, (start, end) in enumerate(parse_split(split, total)):
        if num_samples[s] and start == end:
            raise ValueError(f"--split {split}: the {SPLIT_NAMES[s]} split of {total} TFRecord records is empty but "
                             f"{num_samples[s]} samples are needed; give that split a larger weight")
        datasets.append(TFRecordBertDataset(SPLIT_NAMES[s], list(files), offsets, start, end, num_samples[s],
                                            seq_length, seed + s, vocab_size, max_preds) if num_samples[s] else None)
    return datasets
