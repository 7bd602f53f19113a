"""The mmap `.bin/.idx` token format, byte-compatible with Megatron-LM's and NeMo's.

`.bin`: the tokens of every sequence, back to back, in one dtype.
`.idx`, little-endian:
    9 bytes  b"MMIDIDX\\x00\\x00"
    uint64   version (1)
    uint8    dtype code (1 uint8, 2 int8, 3 int16, 4 int32, 5 int64, 6 float64, 7 float32, 8 uint16)
    uint64   number of sequences S
    uint64   number of document-index entries D (documents + 1)
    int32[S] sequence lengths, in tokens
    int64[S] sequence start offsets in the .bin, in bytes
    int64[D] document index: document i is sequences doc_idx[i] .. doc_idx[i+1]-1

A sequence is a document, or with --split-sentences a sentence of one.
"""

import os
import struct

import numpy as np

INDEX_HEADER = b"MMIDIDX\x00\x00"
INDEX_VERSION = 1
DTYPE_CODES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 6: np.float64, 7: np.float32,
               8: np.uint16}
CODE_OF_DTYPE = {np.dtype(dtype): code for code, dtype in DTYPE_CODES.items()}


def best_fitting_dtype(vocab_size):
    return np.uint16 if vocab_size is not None and vocab_size < 65500 else np.int32


def data_file_path(prefix):
    return prefix + ".bin"


def index_file_path(prefix):
    return prefix + ".idx"


class DatasetError(ValueError):
    """Data that cannot make the datasets asked for (the message says which file and what to do)."""


class TokenIdError(DatasetError):
    """A token id outside [0, vocab_size)."""


def check_token_ids(tokens, vocab_size, where):
    """Raise TokenIdError naming `where` if a token id is negative or >= vocab_size."""
    if vocab_size is None or len(tokens) == 0:
        return
    low, high = int(np.min(tokens)), int(np.max(tokens))
    if low < 0 or high >= vocab_size:
        raise TokenIdError(f"{where}: token id {high if high >= vocab_size else low} is outside the vocabulary "
                           f"[0, {vocab_size}): the data was made with another tokenizer; re-run "
                           "scripts/preprocess_data.py with this tokenizer or pass the matching --vocab-file")


class IndexedDatasetBuilder:
    """Writes `{prefix}.bin` while sequences are added, and `{prefix}.idx` at `finalize()`.

    Files are written under temporary names and renamed at finalize, so an interrupted run never
    leaves a .bin/.idx pair that looks complete.
    """

    def __init__(self, prefix, dtype=np.int32, vocab_size=None):
        self.prefix = prefix
        self.dtype = np.dtype(dtype)
        if self.dtype not in CODE_OF_DTYPE:
            raise ValueError(f"{prefix}: dtype {self.dtype} cannot be written in the .idx format")
        self.vocab_size = vocab_size
        self._bin_tmp = data_file_path(prefix) + ".tmp"
        self._bin = open(self._bin_tmp, "wb")
        self.sizes = []
        self.doc_idx = [0]

    def add_item(self, tokens):
        """Append one sequence (a document, or one sentence of a document)."""
        tokens = np.asarray(tokens)
        check_token_ids(tokens, self.vocab_size, f"{self.prefix}: sequence {len(self.sizes)}")
        self._bin.write(tokens.astype(self.dtype, copy=False).tobytes(order="C"))
        self.sizes.append(len(tokens))

    def end_document(self):
        self.doc_idx.append(len(self.sizes))

    def add_document(self, sequences):
        for sequence in sequences:
            self.add_item(sequence)
        self.end_document()

    def add_checked_document(self, tokens, lengths):
        """Append one document given as all its sequences' ids, already in this builder's dtype and
        checked against the vocabulary (as preprocessing workers hand them over), and their lengths."""
        self._bin.write(memoryview(np.ascontiguousarray(tokens, dtype=self.dtype)))
        self.sizes.extend(lengths)
        self.end_document()

    def merge_file_(self, other_prefix):
        """Append another .bin/.idx of the same dtype, documents and all."""
        other = MMapIndexedDataset(other_prefix)
        if other.dtype != self.dtype:
            raise ValueError(f"cannot merge {other_prefix} ({other.dtype}) into {self.prefix} ({self.dtype})")
        offset = len(self.sizes)
        self.sizes.extend(other.sizes.tolist())
        self.doc_idx.extend((offset + other.doc_idx[1:]).tolist())
        with open(data_file_path(other_prefix), "rb") as f:
            while chunk := f.read(64 << 20):
                self._bin.write(chunk)

    def discard(self):
        """Drop what was written (the temporary .bin); existing files at the prefix stay as they were."""
        self._bin.close()
        os.remove(self._bin_tmp)

    def finalize(self):
        self._bin.close()
        sizes = np.asarray(self.sizes, dtype=np.int32)
        pointers = np.zeros(len(sizes), dtype=np.int64)
        np.cumsum(sizes[:-1].astype(np.int64) * self.dtype.itemsize, out=pointers[1:])
        idx_tmp = index_file_path(self.prefix) + ".tmp"
        with open(idx_tmp, "wb") as f:
            f.write(INDEX_HEADER)
            f.write(struct.pack("<Q", INDEX_VERSION))
            f.write(struct.pack("<B", CODE_OF_DTYPE[self.dtype]))
            f.write(struct.pack("<Q", len(sizes)))
            f.write(struct.pack("<Q", len(self.doc_idx)))
            f.write(sizes.tobytes(order="C"))
            f.write(pointers.tobytes(order="C"))
            f.write(np.asarray(self.doc_idx, dtype=np.int64).tobytes(order="C"))
        os.replace(self._bin_tmp, data_file_path(self.prefix))
        os.replace(idx_tmp, index_file_path(self.prefix))


class MMapIndexedDataset:
    """Reads a .bin/.idx pair through mmap: nothing is loaded until a sequence is asked for.

    Checks at open: the header, the version, a known dtype code, and that the .bin holds exactly the
    bytes the .idx describes (a truncated .bin, or an .idx written for another dtype, is an error).
    """

    def __init__(self, prefix):
        self.prefix = prefix
        idx_path, bin_path = index_file_path(prefix), data_file_path(prefix)
        for path in (idx_path, bin_path):
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{path}: no such file; --data-path takes the prefix of a .bin/.idx pair "
                                        "written by scripts/preprocess_data.py (without the extension)")
        with open(idx_path, "rb") as f:
            header = f.read(len(INDEX_HEADER) + 8 + 1 + 8 + 8)
        if len(header) < 34 or header[:9] != INDEX_HEADER:
            raise ValueError(f"{idx_path}: not an mmap indexed-dataset index (expected the {INDEX_HEADER!r} header)")
        version, code, count, doc_count = struct.unpack("<QBQQ", header[9:])
        if version != INDEX_VERSION:
            raise ValueError(f"{idx_path}: index version {version}, only {INDEX_VERSION} is supported")
        if code not in DTYPE_CODES:
            raise ValueError(f"{idx_path}: unknown dtype code {code}")
        self.dtype = np.dtype(DTYPE_CODES[code])
        expected_idx = 34 + count * 4 + count * 8 + doc_count * 8
        if os.path.getsize(idx_path) != expected_idx:
            raise ValueError(f"{idx_path}: {os.path.getsize(idx_path)} bytes, its header describes {expected_idx}: "
                             "the file is truncated or corrupt; re-run scripts/preprocess_data.py")
        self._index = np.memmap(idx_path, mode="r", dtype=np.uint8)
        self.sizes = np.frombuffer(self._index, dtype=np.int32, count=count, offset=34)
        self.pointers = np.frombuffer(self._index, dtype=np.int64, count=count, offset=34 + count * 4)
        self.doc_idx = np.frombuffer(self._index, dtype=np.int64, count=doc_count, offset=34 + count * 12)
        described = int(self.pointers[-1]) + int(self.sizes[-1]) * self.dtype.itemsize if count else 0
        actual = os.path.getsize(bin_path)
        if actual != described:
            raise ValueError(
                f"{bin_path} has {actual} bytes but {idx_path} describes {described} bytes of {self.dtype} tokens: "
                "the .bin is truncated, or the two files were not written together (e.g. an .idx for another "
                "dtype); re-run scripts/preprocess_data.py")
        self._bin = np.memmap(bin_path, mode="r", dtype=np.uint8) if actual else np.zeros(0, dtype=np.uint8)

    def __len__(self):
        return len(self.sizes)

    def __getitem__(self, i):
        return self.get(i)

    def get(self, i, offset=0, length=None):
        """Tokens offset .. offset+length of sequence i (all of it by default), as a numpy view."""
        size = int(self.sizes[i])
        length = size - offset if length is None else length
        if offset < 0 or length < 0 or offset + length > size:
            raise IndexError(f"{self.prefix}: tokens {offset}..{offset + length} of sequence {i} (size {size})")
        start = int(self.pointers[i]) + offset * self.dtype.itemsize
        return np.frombuffer(self._bin, dtype=self.dtype, count=length, offset=start)

    @property
    def num_documents(self):
        return len(self.doc_idx) - 1

    def token_range(self, chunk_tokens=1 << 26):
        """(min, max) token id over the whole .bin, read in chunks."""
        tokens = np.frombuffer(self._bin, dtype=self.dtype)
        low, high = None, None
        for start in range(0, len(tokens), chunk_tokens):
            chunk = tokens[start:start + chunk_tokens]
            low = int(chunk.min()) if low is None else min(low, int(chunk.min()))
            high = int(chunk.max()) if high is None else max(high, int(chunk.max()))
        return low, high


def check_dataset(prefix, vocab_size):
    """`--check-dataset`: one line describing the data's token ids against the vocabulary; an error if
    any id is outside it."""
    dataset = MMapIndexedDataset(prefix)
    low, high = dataset.token_range() if len(dataset) else (None, None)
    line = (f"{prefix}: {dataset.num_documents} documents, {len(dataset)} sequences, {int(dataset.sizes.sum())} "
            f"tokens ({dataset.dtype}), token ids {low}..{high}, vocabulary size {vocab_size}")
    if len(dataset):
        check_token_ids(np.array([low, high]), vocab_size, f"{prefix}.bin")
    return line
