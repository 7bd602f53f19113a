"""Exact and near duplicates across a corpus, the last two stages of scripts/clean_corpus.py.

Exact: a 128-bit BLAKE2 hash of the text lowercased with its whitespace collapsed.

Near: MinHash signatures of each document's word shingles (`shingle_size` consecutive lowercased words)
and datasketch's MinHashLSH index over them at `threshold` (its bands and rows chosen by datasketch for
that Jaccard similarity). A document is a near duplicate when a document kept before it is an LSH
candidate whose estimated Jaccard similarity (the share of equal signature values) reaches the
threshold; it is dropped and its pair written to the side file. Signatures are computed with numpy
(word hashes by xxhash, shingle hashes by a polynomial over them, `num_perm` multiply-shift hash
functions of 64-bit seeds drawn from `seed`): datasketch's own update hashes one shingle at a time in
Python, several times slower.

The index holds, per kept document, its key and one band hash per band; the signatures themselves, needed
only to check a candidate, stay on disk in the shard files (`SignatureStore`), so memory grows with the
number of kept documents by the index alone (benchmarks/clean_corpus_throughput.py prints it per million).
"""

import hashlib
import os
import re

import numpy as np

WORD = re.compile(r"\w+")
MASK32 = np.uint64(0xFFFFFFFF)


def exact_hash(text):
    return hashlib.blake2b(" ".join(text.lower().split()).encode("utf-8"), digest_size=16).digest()


class Signatures:
    """MinHash signatures (uint32 [num_perm]) of texts, the same in every process for the same seed."""

    def __init__(self, num_perm=128, shingle_size=5, seed=1):
        rng = np.random.default_rng(seed)
        self.multipliers = rng.integers(1, 2 ** 63, size=num_perm, dtype=np.uint64) | np.uint64(1)
        self.offsets = rng.integers(0, 2 ** 63, size=num_perm, dtype=np.uint64)
        self.powers = np.array([pow(1_000_003, j, 2 ** 64) for j in range(shingle_size)], dtype=np.uint64)
        self.num_perm, self.shingle_size = num_perm, shingle_size

    def shingle_hashes(self, text):
        import xxhash
        words = WORD.findall(text.lower())
        hashes = np.fromiter((xxhash.xxh64_intdigest(word.encode("utf-8")) for word in words), dtype=np.uint64,
                             count=len(words))
        count = max(len(words) - self.shingle_size + 1, 1)
        shingles = np.zeros(count, dtype=np.uint64)
        with np.errstate(over="ignore"):
            for j in range(min(self.shingle_size, len(words))):
                shingles += hashes[j:j + count] * self.powers[j]
        return np.unique(shingles)

    def __call__(self, text):
        shingles = self.shingle_hashes(text)
        with np.errstate(over="ignore"):
            mixed = np.multiply.outer(shingles, self.multipliers) + self.offsets
        return (mixed >> np.uint64(32)).min(axis=0).astype(np.uint32)


def similarity(a, b):
    """Estimated Jaccard similarity of two signatures."""
    return float(np.mean(a == b))


class SignatureStore:
    """The kept documents' signatures by key, the document's line number in the output (1, 2, ...): rows
    of finished shards are read back from the shard's file when a candidate is checked; those of the
    shard in progress are in memory until its file is written."""

    def __init__(self, num_perm):
        self.num_perm, self.rows = num_perm, []

    def add_file(self, path):
        """A finished shard's signature file; returns the keys of its rows."""
        first = len(self.rows) + 1
        self.rows.extend((path, row) for row in range(os.path.getsize(path) // (4 * self.num_perm)))
        return range(first, len(self.rows) + 1)

    def add(self, signature):
        self.rows.append(signature)
        return len(self.rows)

    def settle(self, path, first_key):
        """The signatures from first_key on are now the rows of the file at `path`."""
        for row, key in enumerate(range(first_key, len(self.rows) + 1)):
            self.rows[key - 1] = (path, row)

    def __getitem__(self, key):
        entry = self.rows[key - 1]
        if isinstance(entry, np.ndarray):
            return entry
        path, row = entry
        with open(path, "rb") as f:
            f.seek(row * 4 * self.num_perm)
            return np.frombuffer(f.read(4 * self.num_perm), dtype=np.uint32)


class NearDuplicateIndex:
    """datasketch's MinHashLSH over kept documents' signatures, checked against the stored signatures."""

    def __init__(self, threshold=0.7, num_perm=128):
        from datasketch import MinHashLSH
        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self.threshold, self.store = threshold, SignatureStore(num_perm)

    @staticmethod
    def _minhash(signature):
        from datasketch import LeanMinHash
        return LeanMinHash(seed=0, hashvalues=signature, scheme="affine32")  # 32-bit values, as ours

    def match(self, signature):
        """(key, similarity) of the most similar kept document at or above the threshold, or None."""
        best = None
        for key in self.lsh.query(self._minhash(signature)):
            score = similarity(signature, self.store[key])
            if score >= self.threshold and (best is None or (score, -key) > (best[1], -best[0])):
                best = (key, score)
        return best

    def add(self, signature):
        """Index a kept document's signature; returns its key."""
        key = self.store.add(signature)
        self.lsh.insert(key, self._minhash(signature), check_duplication=False)
        return key

    def restore(self, path):
        """Index a finished shard's signature file (a restarted run)."""
        rows = np.fromfile(path, dtype=np.uint32).reshape(-1, self.store.num_perm)
        for key, signature in zip(self.store.add_file(path), rows):
            self.lsh.insert(key, self._minhash(signature), check_duplication=False)
