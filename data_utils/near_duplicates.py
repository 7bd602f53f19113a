"""Exact and near duplicates across a corpus, the last two stages of scripts/clean_corpus.py.

Exact: a 128-bit BLAKE2 hash of the text lowercased with its whitespace collapsed; the index keeps its
first 64 bits.

Near: MinHash signatures of each document's word shingles (`shingle_size` consecutive lowercased words)
in a banded LSH index, `bands` x `rows` of the `num_perm` values chosen for the Jaccard `threshold` by
datasketch's criterion with misses weighed 9 to 1 (bands_and_rows: 20 x 6 for 0.7 and 128 values, which
finds 95% of pairs at 0.72 and 99.8% at 0.8, where datasketch's 14 x 9 finds 53% and 87%). A document is
a near duplicate when a kept
document sharing one of its band hashes has an estimated Jaccard similarity (the share of equal
signature values) at or above the threshold; its pair goes to the side file. Signatures are computed
with numpy (word hashes by xxhash, shingle hashes a polynomial over them, `num_perm` affine 32-bit maps
seeded by `seed`); datasketch's MinHash, hashing one shingle at a time in Python, was several times
slower.

Memory: datasketch's MinHashLSH keeps a Python set per bucket and a list of band keys per document (4.8 KB
a document measured here, 4.5 GiB per million). Here each band hash and key sit in sorted numpy arrays
(12 bytes a band; recent ones in a dict until merged), the exact hashes likewise, and the signatures on
disk in the shard files (`SignatureStore`), read back only to check a candidate
(benchmarks/clean_corpus_throughput.py prints the bytes per kept document).
"""

import bisect
import hashlib
import os
import re

import numpy as np

WORD = re.compile(r"\w+")
MASK32 = np.uint64(0xFFFFFFFF)


def exact_hash(text):
    return hashlib.blake2b(" ".join(text.lower().split()).encode("utf-8"), digest_size=16).digest()


class Signatures:
    """MinHash signatures (uint32 [num_perm]) of texts, the same in every process for the same seed: each
    shingle's 64-bit hash folded to 32 bits, then num_perm affine maps a x + b mod 2^32 (a odd: each one a
    permutation, datasketch's "affine32" scheme), the minimum of each over the document's shingles."""

    def __init__(self, num_perm=128, shingle_size=5, seed=1):
        rng = np.random.default_rng(seed)
        self.multipliers = (rng.integers(0, 2 ** 32, size=num_perm, dtype=np.uint64) | np.uint64(1)).astype(np.uint32)
        self.offsets = rng.integers(0, 2 ** 32, size=num_perm, dtype=np.uint64).astype(np.uint32)
        self.powers = np.array([pow(1_000_003, j, 2 ** 64) for j in range(shingle_size)], dtype=np.uint64)
        self.num_perm, self.shingle_size = num_perm, shingle_size
        self.buffer = np.empty((4096, num_perm), dtype=np.uint32)  # reused: a fresh array each time page-faults

    def shingle_hashes(self, text):
        """32-bit hashes of the text's shingles, repeats included (a minimum does not see them)."""
        import xxhash
        words = WORD.findall(text.lower())
        hashes = np.fromiter((xxhash.xxh64_intdigest(word.encode("utf-8")) for word in words), dtype=np.uint64,
                             count=len(words))
        count = max(len(words) - self.shingle_size + 1, 1)
        shingles = np.zeros(count, dtype=np.uint64)
        with np.errstate(over="ignore"):
            for j in range(min(self.shingle_size, len(words))):
                shingles += hashes[j:j + count] * self.powers[j]
        return (shingles ^ (shingles >> np.uint64(32))).astype(np.uint32)

    def __call__(self, text):
        shingles = self.shingle_hashes(text)
        if len(shingles) > len(self.buffer):
            self.buffer = np.empty((len(shingles), self.num_perm), dtype=np.uint32)
        mixed = np.multiply.outer(shingles, self.multipliers, out=self.buffer[:len(shingles)])
        mixed += self.offsets
        return mixed.min(axis=0)


def similarity(a, b):
    """Estimated Jaccard similarity of two signatures."""
    return float(np.mean(a == b))


class SortedRuns:
    """A multimap of uint64 hashes to int keys in little memory: recent entries in a dict of lists, merged
    into sorted numpy arrays (8 + 4 bytes an entry) when it holds `buffer` of them."""

    def __init__(self, buffer=500_000):
        self.recent, self.count, self.buffer = {}, 0, buffer
        self.hashes, self.keys = np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.int32)

    def get(self, values):
        """The keys stored under any of `values` (a uint64 array)."""
        first, last = np.searchsorted(self.hashes, values, "left"), np.searchsorted(self.hashes, values, "right")
        found = [key for start, end in zip(first.tolist(), last.tolist()) if end > start
                 for key in self.keys[start:end].tolist()]
        return found + [key for value in values.tolist() for key in self.recent.get(value, ())]

    def add(self, values, key):
        for value in values.tolist():
            self.recent.setdefault(value, []).append(key)
        self.count += len(values)
        if self.count >= self.buffer:
            self._merge()

    def _merge(self):
        pairs = [(value, key) for value, keys in self.recent.items() for key in keys]
        hashes = np.concatenate([self.hashes, np.fromiter((v for v, _ in pairs), np.uint64, len(pairs))])
        keys = np.concatenate([self.keys, np.fromiter((k for _, k in pairs), np.int32, len(pairs))])
        order = np.argsort(hashes, kind="stable")
        self.hashes, self.keys, self.recent, self.count = hashes[order], keys[order], {}, 0


class ExactIndex:
    """The kept documents' exact hashes (their first 64 bits) and output lines."""

    def __init__(self):
        self.runs = SortedRuns()

    @staticmethod
    def _value(digest):
        return int.from_bytes(digest[:8], "little")

    def find(self, digest):
        keys = self.runs.get(np.array([self._value(digest)], dtype=np.uint64))
        return min(keys) if keys else None

    def add(self, digest, key):
        self.runs.add(np.array([self._value(digest)], dtype=np.uint64), key)


class SignatureStore:
    """The kept documents' signatures by key, the document's line number in the output (1, 2, ...): those of
    finished shards are read back from the shard's file when a candidate is checked; those of the shard in
    progress are in memory until its file is written."""

    def __init__(self, num_perm):
        self.num_perm, self.files, self.pending, self.first_pending = num_perm, [], [], 1

    def add_file(self, path):
        """A finished shard's signature file, holding the next keys; returns them."""
        first = self.first_pending
        self.files.append((first, path))
        self.first_pending += os.path.getsize(path) // (4 * self.num_perm)
        return range(first, self.first_pending)

    def add(self, signature):
        self.pending.append(signature)
        return self.first_pending + len(self.pending) - 1

    def settle(self, path):
        """The shard in progress is written to `path`: its signatures are read from there from now on."""
        self.files.append((self.first_pending, path))
        self.first_pending += len(self.pending)
        self.pending = []

    def __getitem__(self, key):
        if key >= self.first_pending:
            return self.pending[key - self.first_pending]
        first, path = self.files[bisect.bisect_right(self.files, (key, chr(0x10FFFF))) - 1]
        with open(path, "rb") as f:
            f.seek((key - first) * 4 * self.num_perm)
            return np.frombuffer(f.read(4 * self.num_perm), dtype=np.uint32)


def bands_and_rows(threshold, num_perm, false_negative_weight=0.9):
    """(bands, rows), bands x rows <= num_perm, whose candidate probability 1 - (1 - s^rows)^bands has the
    least weighted sum of its area below the threshold (false positives, weight 1 - false_negative_weight)
    and of its shortfall from 1 above it (false negatives). datasketch weighs them equally; candidates
    are checked against their signatures here, so a false positive costs a read and a false negative a
    kept duplicate: the default weighs misses 9 to 1."""
    similarity = np.linspace(0.0, 1.0, 2001)
    below, above = similarity <= threshold, similarity >= threshold
    best = None
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            candidate = 1.0 - (1.0 - similarity ** rows) ** bands
            error = ((1 - false_negative_weight) * np.trapezoid(candidate[below], similarity[below])
                     + false_negative_weight * np.trapezoid(1.0 - candidate[above], similarity[above]))
            if best is None or error < best[0]:
                best = (error, bands, rows)
    return best[1:]


class NearDuplicateIndex:
    """Banded LSH over the kept documents' signatures, candidates checked against their stored signatures.
    A band's hash mixes its values with fixed odd multipliers and its band number, so the bands of every
    document share one table."""

    def __init__(self, threshold=0.7, num_perm=128):
        self.bands, self.rows = bands_and_rows(threshold, num_perm)
        self.threshold, self.store, self.table = threshold, SignatureStore(num_perm), SortedRuns()
        rng = np.random.default_rng(12345)
        self.mixers = rng.integers(1, 2 ** 63, size=(self.bands, self.rows), dtype=np.uint64) | np.uint64(1)
        self.salts = rng.integers(0, 2 ** 63, size=self.bands, dtype=np.uint64)

    def _band_hashes(self, signature):
        values = signature[:self.bands * self.rows].astype(np.uint64).reshape(self.bands, self.rows)
        with np.errstate(over="ignore"):
            mixed = (values * self.mixers).sum(axis=1, dtype=np.uint64) + self.salts
            return mixed ^ (mixed >> np.uint64(29))

    def match(self, signature):
        """(key, similarity) of the most similar kept document at or above the threshold (the earliest of
        equals), or None."""
        best = None
        for key in sorted(set(self.table.get(self._band_hashes(signature)))):
            score = similarity(signature, self.store[key])
            if score >= self.threshold and (best is None or score > best[1]):
                best = (key, score)
        return best

    def add(self, signature):
        """Index a kept document's signature; returns its key."""
        key = self.store.add(signature)
        self.table.add(self._band_hashes(signature), key)
        return key

    def restore(self, path):
        """Index a finished shard's signature file (a restarted run)."""
        rows = np.fromfile(path, dtype=np.uint32).reshape(-1, self.store.num_perm)
        for key, signature in zip(self.store.add_file(path), rows):
            self.table.add(self._band_hashes(signature), key)
