"""Our tokenizers written as transformers reads them: `tokenizer.json` (built with the `tokenizers`
library from the same vocabulary) and `tokenizer_config.json` naming the class and special tokens, so
`AutoTokenizer.from_pretrained(folder)` encodes text to the ids our tokenizer gives.

GPT-2's byte-level BPE and BERT's WordPiece map one to one onto `tokenizers` models. A SentencePiece
model is rebuilt from its pieces: a unigram model keeps its scores; a BPE model keeps its ids and gets
the merges that SentencePiece applies implicitly (a pair may merge when the joined piece is in the
vocabulary, the piece with the lower id first); the normalization is its precompiled character map, with
whitespace trimmed and collapsed and "▁" before every word, as SentencePiece does by default.
"""

import json
import os
import shutil

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from .tokenization import BertWordPieceTokenizer, GPT2BPETokenizer, HFTokenizer, SentencePieceTokenizer, read_gpt2_files

_SPM_NORMAL, _SPM_UNKNOWN, _SPM_CONTROL, _SPM_BYTE = 1, 2, 3, 6  # ModelProto.SentencePiece.Type
_SPM_UNIGRAM, _SPM_BPE = 1, 2  # TrainerSpec.ModelType


def _gpt2(tokenizer):
    vocab, merges = read_gpt2_files(tokenizer.vocab_file, tokenizer.merge_file)
    backend = Tokenizer(models.BPE(vocab, merges))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    eod = "<|endoftext|>"
    return backend, {"tokenizer_class": "GPT2Tokenizer", "bos_token": eod, "eos_token": eod, "unk_token": eod,
                     "add_prefix_space": False}, {tokenizer.vocab_file: "vocab.json", tokenizer.merge_file: "merges.txt"}


def _hf(tokenizer):
    """A tokenizer.json is transformers' own: written back as it is, with its end-of-document token."""
    eod = tokenizer.backend.id_to_token(tokenizer.eod)
    pad = tokenizer.backend.id_to_token(tokenizer.pad)
    return tokenizer.backend, {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": eod, "eos_token": eod,
                               "pad_token": pad}, {}


def _wordpiece(tokenizer):
    lower = tokenizer.name == "BertWordPieceLowerCase"
    return tokenizer.wordpiece, {
        "tokenizer_class": "BertTokenizer", "do_lower_case": lower, "unk_token": "[UNK]", "sep_token": "[SEP]",
        "pad_token": "[PAD]", "cls_token": "[CLS]", "mask_token": "[MASK]"}, {tokenizer.source: "vocab.txt"}


def _spm_merges(vocab, mergeable):
    """BPE merges equivalent to SentencePiece's BPE: every split of a piece into two pieces, ranked by
    the id of the joined piece (SentencePiece joins the best-scoring, i.e. lowest-id, piece first)."""
    merges = []
    for piece in sorted(mergeable, key=vocab.get):
        splits = [(piece[:i], piece[i:]) for i in range(1, len(piece))]
        merges += sorted(((left, right) for left, right in splits if left in mergeable and right in mergeable),
                         key=lambda pair: (vocab[pair[0]], vocab[pair[1]]))
    return merges


def _sentencepiece(tokenizer, bert):
    from sentencepiece import sentencepiece_model_pb2
    proto = sentencepiece_model_pb2.ModelProto()
    with open(tokenizer.source, "rb") as f:
        proto.ParseFromString(f.read())
    pieces, spec = proto.pieces, proto.trainer_spec
    if spec.model_type == _SPM_UNIGRAM:
        model = models.Unigram([(p.piece, p.score) for p in pieces], unk_id=spec.unk_id,
                               byte_fallback=spec.byte_fallback)
    elif spec.model_type == _SPM_BPE:
        vocab = {p.piece: i for i, p in enumerate(pieces)}
        mergeable = {p.piece for p in pieces if p.type == _SPM_NORMAL}
        model = models.BPE(vocab, _spm_merges(vocab, mergeable), unk_token=pieces[spec.unk_id].piece, fuse_unk=True,
                           byte_fallback=spec.byte_fallback)
    else:
        raise ValueError(f"{tokenizer.source}: SentencePiece model type {spec.model_type} has no transformers form "
                         "here (bpe and unigram have)")
    backend = Tokenizer(model)
    charsmap = proto.normalizer_spec.precompiled_charsmap
    backend.normalizer = normalizers.Sequence(([normalizers.Precompiled(charsmap)] if charsmap else []) + [
        normalizers.Strip(), normalizers.Replace(Regex(" {2,}"), " ")])
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    backend.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Strip(content=" ", left=1, right=0)])
    names = {"unk_token": spec.unk_id, "pad_token": spec.pad_id, "bos_token": spec.bos_id, "eos_token": spec.eos_id}
    config = {name: pieces[i].piece for name, i in names.items() if i >= 0}
    if bert:
        config.update(cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
        backend.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[(t, tokenizer.processor.piece_to_id(t)) for t in ("[CLS]", "[SEP]")])
    return backend, {"tokenizer_class": "PreTrainedTokenizerFast", **config}, {tokenizer.source: "spiece.model"}


def save_for_transformers(tokenizer, folder, bert, model_max_length):
    """Write tokenizer.json, tokenizer_config.json and the tokenizer's own files (vocab.json + merges.txt,
    vocab.txt or spiece.model) for `tokenizer` (one of ours) into `folder`.
    bert: the model is a BERT (a SentencePiece tokenizer then adds [CLS] and [SEP] around a text)."""
    if isinstance(tokenizer, GPT2BPETokenizer):
        backend, config, files = _gpt2(tokenizer)
    elif isinstance(tokenizer, BertWordPieceTokenizer):
        backend, config, files = _wordpiece(tokenizer)
    elif isinstance(tokenizer, SentencePieceTokenizer):
        backend, config, files = _sentencepiece(tokenizer, bert)
    elif isinstance(tokenizer, HFTokenizer):
        backend, config, files = _hf(tokenizer)
    else:
        raise ValueError(f"{tokenizer.name} has no transformers tokenizer")
    for source, name in files.items():
        shutil.copy(source, os.path.join(folder, name))
    backend.save(os.path.join(folder, "tokenizer.json"))
    with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump({**config, "model_max_length": model_max_length}, f, indent=2)


GPT2_VOCABULARY = 50257


def folder_tokenizer_flags(folder, config):
    """The tokenizer flags ({tokenizer_type, vocab_file, merge_file} as paths in `folder`) of a transformers
    model folder with this config.json: its vocab.txt (BERT WordPiece), vocab.json + merges.txt (GPT-2 BPE)
    or tokenizer.json (HFTokenizer: what Pythia and GPT-NeoX folders ship only). A folder with none of them
    is read with GPT-2's BPE only when its vocabulary is GPT-2's ({} : the defaults); any other case, or
    files that do not load, is a ValueError naming the folder (never a silent fallback to other ids)."""
    from .tokenization import make_tokenizer

    def path(name):
        return os.path.join(folder, name)
    if os.path.isfile(path("vocab.txt")):
        lower = config.get("do_lower_case", True)
        flags = {"tokenizer_type": "BertWordPieceLowerCase" if lower else "BertWordPieceCase",
                 "vocab_file": path("vocab.txt"), "merge_file": None}
    elif os.path.isfile(path("vocab.json")) and os.path.isfile(path("merges.txt")):
        flags = {"tokenizer_type": "GPT2BPETokenizer", "vocab_file": path("vocab.json"),
                 "merge_file": path("merges.txt")}
    elif os.path.isfile(path("tokenizer.json")):
        flags = {"tokenizer_type": "HFTokenizer", "vocab_file": path("tokenizer.json"), "merge_file": None}
    elif config.get("model_type") == "bert" or config.get("vocab_size") == GPT2_VOCABULARY:
        return {}
    else:
        raise ValueError(f"{folder}: no tokenizer files (tokenizer.json, vocab.json + merges.txt, or vocab.txt) and "
                         f"its {config.get('vocab_size')}-token vocabulary is not GPT-2's: copy the model's tokenizer "
                         "files into the folder")
    try:
        tokenizer = make_tokenizer(flags["tokenizer_type"], vocab_file=flags["vocab_file"],
                                   merge_file=flags["merge_file"])
    except (FileNotFoundError, ValueError) as error:
        raise ValueError(f"{folder}: its tokenizer cannot be read: {error}") from None
    if tokenizer.vocab_size > config.get("vocab_size", tokenizer.vocab_size):
        raise ValueError(f"{folder}: its tokenizer has {tokenizer.vocab_size} tokens but the model embeds "
                         f"{config['vocab_size']}: the tokenizer files are another model's")
    return flags
