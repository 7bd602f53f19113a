"""Loose JSON (one document per line) read lazily: byte offsets, mmap, an offset index built once.

The first open of `corpus.jsonl` with text key `text` scans it in chunks, checks every line, and
writes `corpus.jsonl.text.offsets.npz` beside it, or into a cache folder when one is given (a corpus
folder may be read-only), atomically; it is rebuilt when the corpus is newer. Later opens, on any rank,
only map the file. A 20 GB dump is never read into memory at once.
"""

import hashlib
import json
import mmap
import os

import numpy as np

from .atomic import save_npz_atomically

_CHUNK = 64 << 20


class MalformedJsonError(ValueError):
    """A line of a loose-JSON corpus that cannot be used, with its file and line number."""


def parse_document(line, text_key, path, line_number, key_flag="--text-key"):
    """The text under `text_key` of one JSON line; MalformedJsonError naming path:line (and key_flag, the
    flag that chooses the key) otherwise."""
    try:
        document = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise MalformedJsonError(f"{path}:{line_number}: not valid JSON ({error.msg if hasattr(error, 'msg') else error})") from None
    if not isinstance(document, dict) or text_key not in document:
        keys = sorted(document) if isinstance(document, dict) else type(document).__name__
        raise MalformedJsonError(f"{path}:{line_number}: no {text_key!r} key (has {keys}); choose it with {key_flag}")
    text = document[text_key]
    if not isinstance(text, str):
        raise MalformedJsonError(f"{path}:{line_number}: {text_key!r} is a {type(text).__name__}, not a string")
    if not text.strip():
        raise MalformedJsonError(f"{path}:{line_number}: empty document under {text_key!r}")
    return text


def _line_ends(data, size):
    for chunk_start in range(0, size, _CHUNK):
        chunk = np.frombuffer(data, dtype=np.uint8, count=min(_CHUNK, size - chunk_start), offset=chunk_start)
        ends = (np.flatnonzero(chunk == 10) + chunk_start).tolist()
        del chunk  # release the mmap buffer before the file is closed
        yield from ends
    yield size  # a last line without a newline (an empty slice when the file ends with one)


def iter_lines(path):
    """(line number, line bytes, start, end) of every non-blank line, scanning the file in chunks."""
    size = os.path.getsize(path)
    if size == 0:
        return
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        line_number, start = 1, 0
        for end in _line_ends(data, size):
            line = data[start:end]
            if line.strip():
                yield line_number, line, start, end
            line_number, start = line_number + 1, end + 1


def build_offsets(path, text_key, skip_malformed=False):
    """Check every line; return ([start, end) byte rows of the usable lines, messages of skipped ones)."""
    rows, skipped = [], []
    for line_number, line, start, end in iter_lines(path):
        try:
            parse_document(line, text_key, path, line_number)
        except MalformedJsonError as error:
            if not skip_malformed:
                raise
            skipped.append(str(error))
            continue
        rows.append((start, end))
    return np.asarray(rows, dtype=np.int64).reshape(-1, 2), skipped


class LooseJsonDataset:
    """Documents of a loose-JSON file by index: `dataset[i]` is the text of the i-th usable line.

    skip_malformed=False: a malformed line, a missing key or an empty document is an error naming the
    file and line. skip_malformed=True: such lines are left out and counted (`skipped`, `summary()`).
    cache_dir: where the offset index goes (None: beside the file).
    """

    def __init__(self, path, text_key="text", skip_malformed=False, cache_dir=None):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such loose-JSON file")
        self.path, self.text_key = path, text_key
        index = f"{text_key}{'.skip-malformed' if skip_malformed else ''}.offsets.npz"
        if cache_dir is None:
            index = f"{path}.{index}"
        else:
            os.makedirs(cache_dir, exist_ok=True)
            where = hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:10]
            index = os.path.join(cache_dir, f"{os.path.basename(path)}.{where}.{index}")
        if os.path.isfile(index) and os.path.getmtime(index) >= os.path.getmtime(path):
            with np.load(index) as cached:
                self.offsets, self.skipped = cached["offsets"], cached["skipped"].tolist()
        else:
            self.offsets, self.skipped = build_offsets(path, text_key, skip_malformed)
            save_npz_atomically(index, offsets=self.offsets, skipped=np.asarray(self.skipped, dtype=str))
        if len(self.offsets) == 0:
            raise ValueError(f"{path}: no usable documents under {text_key!r}")
        self._file = open(path, "rb")
        self._data = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)

    def __len__(self):
        return len(self.offsets)

    def __getitem__(self, i):
        start, end = (int(v) for v in self.offsets[i])
        return json.loads(self._data[start:end])[self.text_key]

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def summary(self):
        return f"{self.path}: {len(self)} documents, {len(self.skipped)} malformed lines skipped"
