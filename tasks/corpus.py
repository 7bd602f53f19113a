"""Tokens of a large corpus for perplexity: a .bin/.idx prefix (read as written, end-of-document
tokens included) or a loose-JSON file (each document tokenized and ended with the tokenizer's eod)."""

import itertools
import os

from data_utils.indexed_dataset import MMapIndexedDataset, data_file_path
from data_utils.lazy_loader import LooseJsonDataset


def _documents(path, tokenizer, text_key):
    if os.path.isfile(data_file_path(path)):
        dataset = MMapIndexedDataset(path)
        return (dataset[i].tolist() for i in range(len(dataset)))
    return (tokenizer.tokenize(text) + [tokenizer.eod] for text in LooseJsonDataset(path, text_key))


def corpus_tokens(path, tokenizer, count, text_key="text"):
    """The first `count` tokens of the corpus's documents, concatenated (fewer if it is shorter)."""
    tokens = []
    for document in _documents(path, tokenizer, text_key):
        tokens.extend(itertools.islice(document, count - len(tokens)))
        if len(tokens) == count:
            break
    return tokens
