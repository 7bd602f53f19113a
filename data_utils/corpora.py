"""Named corpora: `--train-data sample` or `--train-data wikipedia` resolves to files.

`sample` ships with the repository (data/jargon_file.jsonl, public domain, see data/README.md).
The others live under $CORPORA_ROOT (default ~/corpora) in the layout below; put or link the files
there, or pass a path instead of a name.
"""

import os
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
