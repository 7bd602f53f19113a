"""Documents in the forms web-text tools hand them over, read as one stream: loose JSON (`.json`,
`.jsonl`, one document per line), lm_dataformat's zstandard-compressed JSON lines (`.jsonl.zst`,
`.json.zst`: The Pile's shards), `.txt` files (one document per file, as GPT-Neo takes them), and
GPT-Neo's document-mode `.tfrecords` (each example one document's token ids under "text").

An input is a file or a folder; a folder's files are read in name order. Text documents come as JSON
lines (a `.txt` file as {text_key: its text, "source": its path}), parsed later by whoever reads them (in
a worker process); every document carries its file and line number for error messages, and how far
through the input's bytes it is (compressed bytes for `.zst`), for progress lines.
"""

import io
import json
import os

from .lazy_loader import iter_lines

JSON_SUFFIXES = (".json", ".jsonl")
ZSTD_SUFFIXES = (".jsonl.zst", ".json.zst")
TEXT_SUFFIXES = (".txt",)
TFRECORD_SUFFIXES = (".tfrecords", ".tfrecord")


def input_files(path, suffixes):
    """The files of `path` (a file, or a folder's files in name order) with one of `suffixes`; an error
    naming the path when there are none."""
    if os.path.isfile(path):
        files = [path] if path.endswith(suffixes) else []
    elif os.path.isdir(path):
        files = [os.path.join(path, name) for name in sorted(os.listdir(path)) if name.endswith(suffixes)]
    else:
        raise FileNotFoundError(f"{path}: no such file or folder")
    if not files:
        raise ValueError(f"{path}: no {', '.join(suffixes)} files")
    return files


def is_tfrecord_input(path):
    return path.endswith(TFRECORD_SUFFIXES) or (
        os.path.isdir(path) and any(name.endswith(TFRECORD_SUFFIXES) for name in os.listdir(path)))


def input_bytes(path, suffixes=JSON_SUFFIXES + ZSTD_SUFFIXES + TEXT_SUFFIXES):
    return sum(os.path.getsize(f) for f in input_files(path, suffixes))


def _zstd_lines(path):
    import zstandard
    with open(path, "rb") as f:
        lines = io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(f), buffer_size=1 << 20)
        for number, line in enumerate(lines, start=1):
            if line.strip():
                yield number, line.rstrip(b"\r\n"), f.tell()


def _text_document(path, text_key):
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    return json.dumps({text_key: text, "source": path}, ensure_ascii=False).encode("utf-8")


def text_lines(path, text_key="text"):
    """(file, line number, JSON line bytes, input bytes read so far) of every document in `path`."""
    done = 0
    for file in input_files(path, JSON_SUFFIXES + ZSTD_SUFFIXES + TEXT_SUFFIXES):
        if file.endswith(TEXT_SUFFIXES):
            yield file, 1, _text_document(file, text_key), done + os.path.getsize(file)
        elif file.endswith(ZSTD_SUFFIXES):
            for number, line, position in _zstd_lines(file):
                yield file, number, line, done + position
        else:
            for number, line, _, end in iter_lines(file):
                yield file, number, line, done + end
        done += os.path.getsize(file)


def tfrecord_documents(path, key="text"):
    """(file, record number, token ids as int64, bytes of the files read whole so far) of every example in
    GPT-Neo .tfrecords under `path` (read with the tfrecord package)."""
    import numpy as np
    from tfrecord.reader import tfrecord_loader
    done = 0
    for file in input_files(path, TFRECORD_SUFFIXES):
        examples = tfrecord_loader(file, None, {key: "int"})
        for number, example in enumerate(examples, start=1):
            yield file, number, np.asarray(example[key], dtype=np.int64), done
        done += os.path.getsize(file)
