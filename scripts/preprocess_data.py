"""Tokenize documents into Megatron-compatible `{prefix}_{key}_{document|sentence}.bin/.idx`.

    python scripts/preprocess_data.py --input corpus.jsonl --json-keys text \\
        --tokenizer-type GPT2BPETokenizer --append-eod --workers 8 --output-prefix data/corpus
    python scripts/preprocess_data.py --input pile/00.jsonl.zst ...     # lm_dataformat / The Pile
    python scripts/preprocess_data.py --input books/ --minimum-size 128 ...  # a folder of .txt files
    python scripts/preprocess_data.py --input neo_tfrecords/ ...       # GPT-Neo's document-mode tfrecords

--input is loose JSON, zstandard-compressed JSON lines (.jsonl.zst, .json.zst), .txt files (one
document each), GPT-Neo .tfrecords (token ids, written as they are: the tokenizer flags must describe
the vocabulary they were made with), or a folder of them (data_utils/raw_documents.py). The input is
streamed (never read whole); worker processes tokenize; the main process writes. With
--split-sentences each sentence is one sequence and a document is its run of sentences (the
`_sentence` files, what BERT datasets read); otherwise each document is one sequence.
"""

import argparse
import itertools
import multiprocessing
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from arguments import ArgumentParser, add_tokenizer_args, explicit_flags, tokenizer_problems  # noqa: E402
from data_utils.indexed_dataset import IndexedDatasetBuilder, best_fitting_dtype, check_token_ids  # noqa: E402
from data_utils.lazy_loader import MalformedJsonError, parse_document  # noqa: E402
from data_utils.progress import Progress  # noqa: E402
from data_utils.raw_documents import (  # noqa: E402
    TFRECORD_SUFFIXES,
    input_bytes,
    is_tfrecord_input,
    text_lines,
    tfrecord_documents,
)
from data_utils.sentences import sentence_splitter, split_sentences  # noqa: E402
from data_utils.tokenization import TOKENIZER_TYPES, make_tokenizer_from_args  # noqa: E402
from data_utils.worker_pool import in_order  # noqa: E402


class Encoder:
    """Turns one JSON line into token ids per key; one instance (and tokenizer) per worker process. A
    document with fewer than --minimum-size tokens under a key (before the eod) comes back as None.
    A worker hands back each document's ids as one array in the output dtype, checked against the
    vocabulary, with its sequences' lengths: the main process only writes bytes (a list of Python
    ints would cost it more to receive than the tokenizing costs the worker)."""

    def __init__(self, args):
        self.args = args

    def initializer(self):
        Encoder.tokenizer = make_tokenizer_from_args(self.args)
        Encoder.dtype = best_fitting_dtype(Encoder.tokenizer.vocab_size)

    def encode(self, numbered_line):
        source, line_number, line, position = numbered_line
        args = self.args
        try:
            texts = {key: parse_document(line, key, source, line_number, "--json-keys") for key in args.json_keys}
        except MalformedJsonError as error:
            return None, position, str(error)
        encoded = {}
        for key, text in texts.items():
            pieces = split_sentences(text, args.keep_newlines) if args.split_sentences else [text]
            sequences = [ids for ids in map(Encoder.tokenizer.tokenize, pieces) if ids]
            if sum(map(len, sequences)) < args.minimum_size:
                return None, position, None
            encoded[key] = self.checked(sequences, f"{source} line {line_number}")
        return encoded, position, None

    def checked(self, sequences, where):
        """(the document's ids in the output dtype, its sequences' lengths), with --append-eod's eod."""
        if self.args.append_eod and sequences and sequences[-1][-1] != Encoder.tokenizer.eod:
            sequences[-1] = list(sequences[-1]) + [Encoder.tokenizer.eod]
        tokens = np.fromiter(itertools.chain.from_iterable(sequences), dtype=np.int64)
        check_token_ids(tokens, Encoder.tokenizer.vocab_size, where)
        return tokens.astype(Encoder.dtype), [len(ids) for ids in sequences]

    def encode_tokens(self, record):
        """A GPT-Neo tfrecord example: its ids as they are (tokenized when it was written)."""
        source, number, tokens, position = record
        if len(tokens) - (len(tokens) > 0 and tokens[-1] == Encoder.tokenizer.eod) < self.args.minimum_size:
            return None, position, None
        return {"text": self.checked([tokens.tolist()], f"{source} record {number}")}, position, None

    def encode_batch(self, numbered_lines):
        return [self.encode(numbered_line) for numbered_line in numbered_lines]


def get_args(argv=None):
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_argument_group("input and output")
    group.add_argument("--input", required=True,
                       help="loose JSON, .jsonl.zst / .json.zst, .txt (one document per file), GPT-Neo .tfrecords, "
                            "or a folder of them")
    group.add_argument("--json-keys", nargs="+", default=["text"], help="keys to tokenize, one output pair each")
    group.add_argument("--output-prefix", required=True, help="written as {prefix}_{key}_{level}.bin/.idx")
    group.add_argument("--split-sentences", action="store_true", help="one sequence per sentence (for BERT)")
    group.add_argument("--keep-newlines", action="store_true", help="with --split-sentences, also split at newlines")
    group.add_argument("--append-eod", action="store_true",
                       help="end every document with the eod token (unless it already ends with it)")
    group.add_argument("--minimum-size", type=int, default=0,
                       help="leave out documents with fewer tokens than this (GPT-Neo's encoder), and count them")
    group.add_argument("--skip-malformed", action="store_true",
                       help="leave out malformed lines, missing keys and empty documents, and count them, "
                            "instead of stopping at the first one")
    group.add_argument("--workers", type=int, default=1, help="tokenizing processes")
    group.add_argument("--log-interval", type=int, default=10000, help="documents between progress lines")
    nemo = parser.add_argument_group("NeMo's names (preprocess_data_for_megatron.py)")
    nemo.add_argument("--tokenizer-library", choices=tuple(NEMO_LIBRARIES), default=None,
                      help="megatron: --tokenizer-type is ours; sentencepiece: --tokenizer-model; huggingface: "
                           f"--tokenizer-type one of {', '.join(HF_NAMES)} (offline)")
    nemo.add_argument("--dataset-impl", choices=("mmap",), default="mmap",
                      help="the .bin/.idx written is always Megatron's mmap format")
    nemo.add_argument("--vocab", dest="vocab_file", default=argparse.SUPPRESS, help="--vocab-file")
    add_tokenizer_args(parser)
    next(a for a in parser._actions if a.dest == "tokenizer_type").choices = None  # checked below, with HF names
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    if args.workers < 1 or args.minimum_size < 0:
        parser.error("--workers must be at least 1 and --minimum-size at least 0")
    explicit = explicit_flags(parser, argv)
    problems = _nemo_tokenizer(args, explicit) or tokenizer_problems(args, explicit)
    if problems:
        parser.error(problems[0])
    return args


# NeMo's --tokenizer-library: the tokenizer types each one takes here.
NEMO_LIBRARIES = {"megatron": TOKENIZER_TYPES + ("BertWordPieceTokenizer",), "sentencepiece": ("SentencePieceTokenizer",),
                  "huggingface": ()}
# transformers' tokenizer names that mean one of ours, with the same ids, offline.
HF_NAMES = {"gpt2": ("GPT2BPETokenizer", None), "bert-base-uncased": ("BertWordPieceTokenizer", "bert-base-uncased"),
            "bert-large-uncased": ("BertWordPieceTokenizer", "bert-large-uncased")}


def _nemo_tokenizer(args, explicit):
    """Our tokenizer flags from NeMo's --tokenizer-library (and --tokenizer-type's HF names); a problem line or []."""
    library = args.tokenizer_library
    if library == "sentencepiece":
        if "tokenizer_type" in explicit and args.tokenizer_type != "SentencePieceTokenizer":
            return [f"--tokenizer-library sentencepiece with --tokenizer-type {args.tokenizer_type}: drop one"]
        if args.tokenizer_path is None:
            return ["--tokenizer-library sentencepiece needs --tokenizer-model (a .model file)"]
        args.tokenizer_type = "SentencePieceTokenizer"
    elif library == "huggingface":
        if args.tokenizer_type not in HF_NAMES:
            return [f"--tokenizer-library huggingface --tokenizer-type {args.tokenizer_type}: offline this takes "
                    f"{', '.join(HF_NAMES)}; for another, use its files with --tokenizer-library megatron"]
        args.tokenizer_type, model_type = HF_NAMES[args.tokenizer_type]
        args.tokenizer_model_type = args.tokenizer_model_type or model_type
    elif args.tokenizer_type not in NEMO_LIBRARIES["megatron"]:
        return [f"--tokenizer-type {args.tokenizer_type}: choose one of {', '.join(NEMO_LIBRARIES['megatron'])} "
                "(a transformers name with --tokenizer-library huggingface)"]
    return []


def _documents(args, encoder):
    """(the input's documents as (encoded or None, input position, error or None), its size in bytes, and
    the worker pool to close); tfrecords need no tokenizing and are read in this process."""
    if is_tfrecord_input(args.input):
        if args.split_sentences or args.json_keys != ["text"]:
            raise ValueError(f"--input {args.input}: GPT-Neo tfrecords hold token ids, one sequence per document: "
                             "drop --split-sentences and --json-keys")
        return map(encoder.encode_tokens, tfrecord_documents(args.input)), input_bytes(
            args.input, TFRECORD_SUFFIXES), None
    size = input_bytes(args.input)
    pool = multiprocessing.Pool(args.workers, initializer=encoder.initializer) if args.workers > 1 else None
    return in_order(pool, args.workers, encoder.encode_batch, text_lines(args.input)), size, pool


def main(argv=None):
    args = get_args(argv)
    encoder = Encoder(args)
    try:
        encoder.initializer()
        documents_in, size, pool = _documents(args, encoder)
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"error: {error}")
    if args.split_sentences:
        print(f"splitting sentences with {sentence_splitter()[1]}", file=sys.stderr)
    level = "sentence" if args.split_sentences else "document"
    builders = {key: IndexedDatasetBuilder(f"{args.output_prefix}_{key}_{level}", Encoder.dtype,
                                           Encoder.tokenizer.vocab_size) for key in args.json_keys}
    progress, documents, position, skipped, short = Progress(size, args.log_interval), 0, 0, [], 0
    try:
        for encoded, position, error in documents_in:
            if error is not None:
                if not args.skip_malformed:
                    raise MalformedJsonError(error + " (or pass --skip-malformed)")
                skipped.append(error)
                continue
            if encoded is None:
                short += 1
                continue
            for key, (tokens, lengths) in encoded.items():
                builders[key].add_checked_document(tokens, lengths)
            documents += 1
            progress.show(documents, position)
    except (MalformedJsonError, ValueError) as error:
        for builder in builders.values():
            builder.discard()
        sys.exit(f"error: {error}")
    finally:
        if pool:
            pool.close()
            pool.join()
    if documents == 0:
        for builder in builders.values():
            builder.discard()
        sys.exit(f"error: --input {args.input}: no documents (no usable JSON lines, or none of --minimum-size "
                 f"{args.minimum_size} tokens); nothing was written")
    for builder in builders.values():
        builder.finalize()
    progress.show(documents, size, final=True)
    if skipped:
        print(f"skipped {len(skipped)} malformed lines; first: {skipped[0]}", file=sys.stderr)
    if short:
        print(f"left out {short} documents of fewer than {args.minimum_size} tokens (--minimum-size)", file=sys.stderr)
    for key in args.json_keys:
        print(f"wrote {args.output_prefix}_{key}_{level}.bin/.idx", file=sys.stderr)


if __name__ == "__main__":
    main()
