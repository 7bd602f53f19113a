"""Report the token ids of preprocessed data against a tokenizer's vocabulary, and stop.

    python scripts/check_dataset.py --data-path data/corpus_text_document [--tokenizer-type ...]

Prints one line per prefix (documents, sequences, tokens, min..max token id, vocabulary size) and
exits non-zero if any id is outside the vocabulary (data made with another tokenizer).
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from arguments import ArgumentParser, add_tokenizer_args  # noqa: E402
from data_utils.dataset_builder import parse_data_path  # noqa: E402
from data_utils.indexed_dataset import check_dataset  # noqa: E402
from data_utils.tokenization import make_tokenizer_from_args  # noqa: E402


def main(argv=None):
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-path", nargs="+", required=True, help="a .bin/.idx prefix, or weight-prefix pairs")
    add_tokenizer_args(parser)
    args = parser.parse_args(argv)
    try:
        tokenizer = make_tokenizer_from_args(args)
        for _, prefix in parse_data_path(args.data_path):
            print(check_dataset(prefix, tokenizer.vocab_size))
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
