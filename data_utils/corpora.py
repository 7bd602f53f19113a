"""Named corpora: `--train-data sample` or `--train-data wikipedia` resolves to files.

`sample` ships with the repository (data/jargon_file.jsonl, public domain, see data/README.md).
The others live under $CORPORA_ROOT (default ~/corpora) in the layout below; put or link the files
there, or pass a path instead of a name.
"""

import os
import sys
from dataclasses import dataclass

REPO_DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")


@dataclass(frozen=True)
class Corpus:
    name: str
    path: str  # loose JSON file; relative paths are under $CORPORA_ROOT
    text_key: str = "text"
    description: str = ""


NAMED_CORPORA = {corpus.name: corpus for corpus in (
    Corpus("sample", os.path.join(REPO_DATA, "jargon_file.jsonl"), "text",
           "The Jargon File 4.4.7 lexicon, 2,307 entries, 1.4 MB (bundled)"),
    Corpus("wikipedia", "wikipedia/wikipedia.json", "text", "English Wikipedia as WikiExtractor loose JSON"),
    Corpus("webtext", "openwebtext/openwebtext.json", "text", "OpenWebText, one document per line"),
    Corpus("bookcorpus", "bookcorpus/bookcorpus.json", "text", "BookCorpus, one book per line"),
)}


def corpora_root():
    return os.environ.get("CORPORA_ROOT", os.path.expanduser("~/corpora"))


def resolve_corpus(name_or_path, text_key="text"):
    """The Corpus for a name in NAMED_CORPORA, or for a path to a loose-JSON file (whose text is under text_key)."""
    if name_or_path in NAMED_CORPORA:
        corpus = NAMED_CORPORA[name_or_path]
        path = os.path.join(corpora_root(), corpus.path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"corpus {corpus.name!r}: {path} does not exist; put the file there, set "
                                    "CORPORA_ROOT to the folder that holds it, or pass the file's path instead")
        return Corpus(corpus.name, path, corpus.text_key, corpus.description)
    if os.path.isfile(name_or_path):
        return Corpus(os.path.splitext(os.path.basename(name_or_path))[0], name_or_path, text_key)
    raise FileNotFoundError(f"{name_or_path!r} is neither a named corpus ({', '.join(NAMED_CORPORA)}) nor a file")


def tokenized_corpus(corpus, tokenizer, cache_dir, append_eod=True, sentences=None):
    """Prefix of `corpus` tokenized into .bin/.idx under cache_dir (built on first use, reused while
    newer than the corpus). sentences: None for one sequence per document (`_document`), "split" to
    split with data_utils.sentences, "lines" for presplit text with one sentence per line (both
    `_sentence`, as BERT reads). One process only: for large corpora run scripts/preprocess_data.py
    with --workers and train with --data-path."""
    import hashlib

    import numpy as np

    from .indexed_dataset import IndexedDatasetBuilder, best_fitting_dtype
    from .lazy_loader import LooseJsonDataset
    from .progress import Progress
    from .sentences import split_sentences
    identity = (f"{os.path.abspath(corpus.path)}|{tokenizer.name}|{tokenizer.vocab_size}|{tokenizer.source}|"
                f"{corpus.text_key}|{int(append_eod)}")
    digest = hashlib.sha1(identity.encode()).hexdigest()[:10]
    level = "document" if sentences is None else "sentence"
    prefix = os.path.join(cache_dir, f"{corpus.name}_{tokenizer.name}_{digest}_{sentences or ''}_{corpus.text_key}_{level}")
    if os.path.isfile(prefix + ".idx") and os.path.getmtime(prefix + ".idx") >= os.path.getmtime(corpus.path):
        return prefix
    os.makedirs(cache_dir, exist_ok=True)
    pieces = {None: lambda text: [text], "split": split_sentences,
              "lines": lambda text: [line for line in text.split("\n") if line.strip()]}[sentences]
    builder = IndexedDatasetBuilder(prefix, best_fitting_dtype(tokenizer.vocab_size), tokenizer.vocab_size)
    print(f"> tokenizing {corpus.path} with {tokenizer.name} into {prefix}.bin/.idx (once: later runs read it)",
          file=sys.stderr, flush=True)
    progress, documents, text_bytes = Progress(os.path.getsize(corpus.path), 10000), 0, 0
    for text in LooseJsonDataset(corpus.path, corpus.text_key, cache_dir=cache_dir):
        sequences = [ids for ids in map(tokenizer.tokenize, pieces(text)) if ids]
        if append_eod and sequences:
            sequences[-1].append(tokenizer.eod)
        builder.add_document([np.asarray(ids) for ids in sequences])
        documents, text_bytes = documents + 1, text_bytes + len(text.encode())
        progress.show(documents, text_bytes)
    builder.finalize()
    progress.show(documents, os.path.getsize(corpus.path), final=True)
    return prefix
