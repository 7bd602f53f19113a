"""Train a SentencePiece tokenizer on loose JSON or plain-text files, with sentencepiece's options as
NeMo's tokenizer guide uses them; the model is what --tokenizer-type SentencePieceTokenizer
--tokenizer-model takes (in training and in scripts/preprocess_data.py).

    python scripts/train_tokenizer.py --input corpus.jsonl more.txt --model-prefix data/spm_32k \\
        --vocab-size 32000 --model-type bpe --character-coverage 0.9995 --byte-fallback --split-digits

Writes {model-prefix}.model and {model-prefix}.vocab. A .json/.jsonl input is read a document
(--text-key) per line; any other file a line at a time. The model also holds [CLS], [SEP] and [MASK]
as control pieces, so one model serves GPT-2 and BERT training.
"""

import argparse
import itertools
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data_utils.lazy_loader import LooseJsonDataset, MalformedJsonError  # noqa: E402
from data_utils.tokenization import train_sentencepiece  # noqa: E402


def _texts(path, text_key):
    if path.endswith((".json", ".jsonl")):
        yield from LooseJsonDataset(path, text_key)
        return
    with open(path, encoding="utf-8") as f:
        yield from f


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", nargs="+", required=True, help="loose JSON (.json/.jsonl) or text files")
    parser.add_argument("--text-key", default="text", help="JSON key of the text")
    parser.add_argument("--model-prefix", required=True, help="writes PREFIX.model and PREFIX.vocab")
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--model-type", choices=("bpe", "unigram"), default="bpe")
    parser.add_argument("--character-coverage", type=float, default=1.0,
                        help="share of characters covered (0.9995 for large alphabets, 1.0 otherwise)")
    parser.add_argument("--byte-fallback", action="store_true", help="unknown characters as UTF-8 byte pieces")
    parser.add_argument("--split-digits", action="store_true", help="one piece per digit")
    for name, default in (("pad", 0), ("unk", 1), ("bos", 2), ("eos", 3)):
        parser.add_argument(f"--{name}-id", type=int, default=default, help=f"id of <{name}> (-1: none)")
    parser.add_argument("--input-sentence-size", type=int, default=2_000_000,
                        help="lines sampled for training at most")
    args = parser.parse_args(argv)
    missing = [path for path in args.input if not os.path.isfile(path)]
    if missing:
        sys.exit(f"error: --input {missing[0]}: no such file")
    model_file = args.model_prefix + ".model"
    try:
        train_sentencepiece(model_file, itertools.chain.from_iterable(_texts(p, args.text_key) for p in args.input),
                            vocab_size=args.vocab_size, model_type=args.model_type,
                            character_coverage=args.character_coverage, byte_fallback=args.byte_fallback,
                            split_digits=args.split_digits, pad_id=args.pad_id, unk_id=args.unk_id,
                            bos_id=args.bos_id, eos_id=args.eos_id, input_sentence_size=args.input_sentence_size)
    except (MalformedJsonError, RuntimeError, ValueError) as error:
        sys.exit(f"error: {error}")
    print(f"wrote {model_file} and {args.model_prefix}.vocab ({args.vocab_size} pieces, {args.model_type})")


if __name__ == "__main__":
    main()
