"""Tokenize loose JSON into Megatron-compatible `{prefix}_{key}_{document|sentence}.bin/.idx`.

    python scripts/preprocess_data.py --input corpus.jsonl --json-keys text \\
        --tokenizer-type GPT2BPETokenizer --append-eod --workers 8 --output-prefix data/corpus

The input is streamed (never read whole); worker processes tokenize; the main process writes.
With --split-sentences each sentence is one sequence and a document is its run of sentences
(the `_sentence` files, what BERT datasets read); otherwise each document is one sequence.
"""

import argparse
import collections
import itertools
import multiprocessing
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from arguments import ArgumentParser, add_tokenizer_args, explicit_flags, tokenizer_problems  # noqa: E402
from data_utils.indexed_dataset import IndexedDatasetBuilder, best_fitting_dtype, check_token_ids  # noqa: E402
from data_utils.lazy_loader import MalformedJsonError, iter_lines, parse_document  # noqa: E402
from data_utils.progress import Progress  # noqa: E402
from data_utils.sentences import sentence_splitter, split_sentences  # noqa: E402
from data_utils.tokenization import TOKENIZER_TYPES, make_tokenizer_from_args  # noqa: E402


class Encoder:
    """Turns one JSON line into token ids per key; one instance (and tokenizer) per worker process.
    A worker hands back each document's ids as one array in the output dtype, checked against the
    vocabulary, with its sequences' lengths: the main process only writes bytes (a list of Python
    ints would cost it more to receive than the tokenizing costs the worker)."""

    def __init__(self, args):
        self.args = args

    def initializer(self):
        Encoder.tokenizer = make_tokenizer_from_args(self.args)
        Encoder.dtype = best_fitting_dtype(Encoder.tokenizer.vocab_size)

    def encode(self, numbered_line):
        line_number, line = numbered_line
        args = self.args
        try:
            texts = {key: parse_document(line, key, args.input, line_number, "--json-keys") for key in args.json_keys}
        except MalformedJsonError as error:
            return line_number, None, len(line), str(error)
        encoded = {}
        for key, text in texts.items():
            pieces = split_sentences(text, args.keep_newlines) if args.split_sentences else [text]
            sequences = [ids for ids in map(Encoder.tokenizer.tokenize, pieces) if ids]
            if args.append_eod and sequences:
                sequences[-1].append(Encoder.tokenizer.eod)
            tokens = np.fromiter(itertools.chain.from_iterable(sequences), dtype=np.int64)
            check_token_ids(tokens, Encoder.tokenizer.vocab_size, f"{args.input} line {line_number}")
            encoded[key] = (tokens.astype(Encoder.dtype), [len(ids) for ids in sequences])
        return line_number, encoded, len(line), None

    def encode_batch(self, numbered_lines):
        return [self.encode(numbered_line) for numbered_line in numbered_lines]


def encoded_in_order(pool, workers, encoder, numbered_lines, batch_lines=256):
    """encoder.encode over the lines, in order; with a pool, batches of lines go to the workers from this
    thread, at most a few per worker in flight. (Pool.imap read the input in a thread of its own, and
    terminating the pool while that thread fed it deadlocked now and then: a run with a bad line never
    ended.) Stopping early leaves only those few batches for pool.close() and join() to finish."""
    if pool is None:
        yield from map(encoder.encode, numbered_lines)
        return
    pending, in_flight = collections.deque(), 4 * workers
    while True:
        batch = list(itertools.islice(numbered_lines, batch_lines))
        if batch:
            pending.append(pool.apply_async(encoder.encode_batch, (batch,)))
        if pending and (len(pending) >= in_flight or not batch):
            yield from pending.popleft().get()
        elif not batch:
            return


def get_args(argv=None):
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_argument_group("input and output")
    group.add_argument("--input", required=True, help="loose JSON file, one document per line")
    group.add_argument("--json-keys", nargs="+", default=["text"], help="keys to tokenize, one output pair each")
    group.add_argument("--output-prefix", required=True, help="written as {prefix}_{key}_{level}.bin/.idx")
    group.add_argument("--split-sentences", action="store_true", help="one sequence per sentence (for BERT)")
    group.add_argument("--keep-newlines", action="store_true", help="with --split-sentences, also split at newlines")
    group.add_argument("--append-eod", action="store_true", help="end every document with the eod token")
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
    if args.workers < 1:
        parser.error("--workers must be at least 1")
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


def main(argv=None):
    args = get_args(argv)
    if not os.path.isfile(args.input):
        sys.exit(f"error: --input {args.input}: no such file")
    encoder = Encoder(args)
    try:
        encoder.initializer()
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"error: {error}")
    if args.split_sentences:
        print(f"splitting sentences with {sentence_splitter()[1]}", file=sys.stderr)
    level = "sentence" if args.split_sentences else "document"
    builders = {key: IndexedDatasetBuilder(f"{args.output_prefix}_{key}_{level}", Encoder.dtype,
                                           Encoder.tokenizer.vocab_size) for key in args.json_keys}
    lines = ((number, line) for number, line, _, _ in iter_lines(args.input))
    pool = multiprocessing.Pool(args.workers, initializer=encoder.initializer) if args.workers > 1 else None
    encoded_lines = encoded_in_order(pool, args.workers, encoder, lines)
    progress, documents, total_bytes, skipped = Progress(os.path.getsize(args.input), args.log_interval), 0, 0, []
    try:
        for _, encoded, size, error in encoded_lines:
            total_bytes += size
            if error is not None:
                if not args.skip_malformed:
                    raise MalformedJsonError(error + " (or pass --skip-malformed)")
                skipped.append(error)
                continue
            for key, (tokens, lengths) in encoded.items():
                builders[key].add_checked_document(tokens, lengths)
            documents += 1
            progress.show(documents, total_bytes)
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
        sys.exit(f"error: --input {args.input}: no documents (the file has no usable JSON lines); nothing was written")
    for builder in builders.values():
        builder.finalize()
    progress.show(documents, os.path.getsize(args.input), final=True)
    if skipped:
        print(f"skipped {len(skipped)} malformed lines; first: {skipped[0]}", file=sys.stderr)
    for key in args.json_keys:
        print(f"wrote {args.output_prefix}_{key}_{level}.bin/.idx", file=sys.stderr)


if __name__ == "__main__":
    main()
