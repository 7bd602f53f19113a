"""Tokenizers against reference libraries, on the bundled real English corpus (1.3 MB of text)."""

import os

import pytest

from data_utils.tokenization import (
    CharacterLevelTokenizer,
    default_gpt2_files,
    make_tokenizer,
    padded_vocab_size,
    read_gpt2_files,
)


def test_sample_corpus_is_over_a_megabyte(sample_texts):
    assert sum(len(t.encode("utf-8")) for t in sample_texts) > 1_000_000


def test_gpt2_ids_equal_transformers_and_round_trip(sample_texts):
    from transformers import GPT2TokenizerFast
    vocab, merges = read_gpt2_files()
    reference = GPT2TokenizerFast(vocab=vocab, merges=merges)
    assert len(reference) == 50257, "the reference must be the full GPT-2 vocabulary"
    tokenizer = make_tokenizer("GPT2BPETokenizer")
    assert tokenizer.vocab_size == 50257 and tokenizer.eod == 50256
    ours = tokenizer.tokenize_batch(sample_texts)
    assert ours == [reference.encode(text) for text in sample_texts]
    assert all(tokenizer.detokenize(ids) == text for ids, text in zip(ours, sample_texts))
    assert sum(map(len, ours)) > 250_000


def test_gpt2_literal_endoftext_is_ordinary_text():
    tokenizer = make_tokenizer("GPT2BPETokenizer")
    assert tokenizer.eod not in tokenizer.tokenize("a <|endoftext|> b")


@pytest.mark.parametrize("lower_case", [True, False])
def test_bert_wordpiece_equals_transformers(sample_texts, bert_vocab_file, lower_case):
    from transformers import BertTokenizer, BertTokenizerFast
    with open(bert_vocab_file, encoding="utf-8") as f:
        vocab = {line.rstrip("\n"): i for i, line in enumerate(f)}
    fast = BertTokenizerFast(vocab=vocab, do_lower_case=lower_case)
    slow = BertTokenizer(vocab=vocab, do_lower_case=lower_case)
    assert len(fast) == len(slow) == 30522, "the reference must be the full WordPiece vocabulary"
    tokenizer = make_tokenizer("BertWordPieceLowerCase" if lower_case else "BertWordPieceCase",
                               vocab_file=bert_vocab_file)
    assert (tokenizer.cls, tokenizer.sep, tokenizer.mask, tokenizer.pad) == (101, 102, 103, 0)
    ours = [tokenizer.tokenize(text) for text in sample_texts]
    assert ours == [fast.encode(text, add_special_tokens=False) for text in sample_texts]
    assert ours[:150] == [slow.encode(text, add_special_tokens=False) for text in sample_texts[:150]]


@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
def test_sentencepiece_trains_once_and_round_trips(tmp_path, sample_texts, model_type):
    model = tmp_path / "spm" / "tokenizer.model"
    options = dict(vocab_size=2000, model_type=model_type, byte_fallback=True, split_digits=True)
    tokenizer = make_tokenizer("SentencePieceTokenizer", tokenizer_model=str(model),
                               train_texts=sample_texts[:800], **options)
    assert model.is_file() and (tmp_path / "spm" / "tokenizer.vocab").is_file()
    assert tokenizer.vocab_size == 2000 and tokenizer.padded_vocab_size == 2048
    assert (tokenizer.pad, tokenizer.eod) == (0, 3)
    assert len({tokenizer.cls, tokenizer.sep, tokenizer.mask}) == 3
    exact = 0
    paragraphs = [p for text in sample_texts[800:900] for p in text.split("\n") if p]
    for text in paragraphs:
        ids = tokenizer.tokenize(text)
        assert max(ids) < tokenizer.vocab_size
        normalized = tokenizer.processor.normalize(text).replace("▁", " ").lstrip(" ")
        assert tokenizer.detokenize(ids) == normalized
        exact += normalized == text
    assert exact > len(paragraphs) // 2, "most paragraphs need no normalization and must round-trip exactly"
    assert all(len(tokenizer.processor.id_to_piece(i).strip("▁")) <= 1
               for i in tokenizer.tokenize("year 1911") if tokenizer.processor.id_to_piece(i).strip("▁").isdigit())
    assert {tokenizer.cls, tokenizer.sep, tokenizer.mask}.isdisjoint(tokenizer.tokenize("[CLS] [SEP] [MASK]"))
    modified = os.path.getmtime(model)
    again = make_tokenizer("SentencePieceTokenizer", tokenizer_model=str(model), train_texts=None)
    assert os.path.getmtime(model) == modified, "an existing model must be loaded, not retrained"
    assert again.tokenize(sample_texts[0]) == tokenizer.tokenize(sample_texts[0])


def test_character_level_round_trips_any_text():
    tokenizer = CharacterLevelTokenizer()
    text = "Jargon — “hacker” naïve 日本 🙂"
    assert tokenizer.detokenize(tokenizer.tokenize(text)) == text
    assert max(tokenizer.tokenize(text)) < 256 and tokenizer.eod == 256 and tokenizer.vocab_size == 258


@pytest.mark.parametrize("kind", ["GPT2BPETokenizer", "CharacterLevelTokenizer"])
def test_a_character_split_over_tokens_is_held_back(kind):
    """Every prefix of the ids decodes to a prefix of the text without U+FFFD: bytes of a character
    that the next token completes are held back."""
    tokenizer = make_tokenizer(kind)
    text = "naïve café: 5 € ≈ 日本語 😀 done"
    ids = tokenizer.tokenize(text)
    assert "\ufffd" in "".join(tokenizer.detokenize(ids[:k]) for k in range(len(ids))), "the text must split characters"
    for k in range(len(ids) + 1):
        prefix = tokenizer.detokenize_prefix(ids[:k])
        assert "\ufffd" not in prefix and text.startswith(prefix), (k, prefix)
    assert tokenizer.detokenize_prefix(ids) == text


def test_padded_vocab_size_by_hand():
    assert padded_vocab_size(50257, 128, 1) == 50304  # 393 * 128
    assert padded_vocab_size(50257, 128, 2) == 50304  # the same at TP 2: 128 is a multiple of 2
    assert padded_vocab_size(50257, 128, 3) == 50304  # lcm 384; 131 * 384
    assert padded_vocab_size(50257, 100, 8) == 50400  # lcm 200; 252 * 200
    assert padded_vocab_size(30522, 8, 1) == 30528


def test_bad_tokenizer_inputs_are_clear_errors(tmp_path, bert_vocab_file):
    missing = str(tmp_path / "missing-vocab.json")
    with pytest.raises(FileNotFoundError, match=r"--vocab-file: .*missing-vocab.json is not a file"):
        make_tokenizer("GPT2BPETokenizer", vocab_file=missing, merge_file=default_gpt2_files()[1])
    with pytest.raises(FileNotFoundError, match=r"--vocab-file: .*missing-vocab.json"):
        make_tokenizer("BertWordPieceLowerCase", vocab_file=missing)
    with pytest.raises(ValueError, match="do not form one GPT-2 BPE vocabulary"):
        make_tokenizer("GPT2BPETokenizer", vocab_file=default_gpt2_files()[0], merge_file=bert_vocab_file)
    with pytest.raises(ValueError, match="--tokenizer-type 'GPT3' is unknown"):
        make_tokenizer("GPT3")
    with pytest.raises(FileNotFoundError, match="no training text"):
        make_tokenizer("SentencePieceTokenizer", tokenizer_model=str(tmp_path / "none.model"))
    with pytest.raises(AttributeError, match=r"GPT2BPETokenizer has no \[MASK\] token"):
        _ = make_tokenizer("GPT2BPETokenizer").mask
