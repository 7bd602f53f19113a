"""Split a loose-JSON file into fixed train/valid/test files by ratio, streaming.

    python scripts/split_json.py --input corpus.jsonl --output-dir out --ratios 0.98 0.01 0.01 [--shuffle --seed 1234]

Writes out/corpus_train.jsonl, out/corpus_valid.jsonl, out/corpus_test.jsonl. Lines are assigned by
position (the first 98% to train, ...) or, with --shuffle, by a seeded permutation of line numbers;
the text is copied byte for byte.
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data_utils.lazy_loader import iter_lines  # noqa: E402

NAMES = ("train", "valid", "test")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.98, 0.01, 0.01], help="train valid test")
    parser.add_argument("--shuffle", action="store_true", help="assign lines by a seeded permutation")
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args(argv)
    ratios = np.asarray(args.ratios + [0.0] * (3 - len(args.ratios)))
    if len(args.ratios) > 3 or (ratios < 0).any() or ratios.sum() <= 0:
        parser.error("--ratios takes one to three non-negative numbers with a positive sum")
    if not os.path.isfile(args.input):
        parser.error(f"--input {args.input}: no such file")
    count = sum(1 for _ in iter_lines(args.input))
    bounds = np.round(np.cumsum(ratios) / ratios.sum() * count).astype(np.int64)
    rank = np.random.RandomState(args.seed).permutation(count) if args.shuffle else np.arange(count)
    split_of = np.searchsorted(bounds, rank, side="right")
    os.makedirs(args.output_dir, exist_ok=True)
    stem = os.path.splitext(os.path.basename(args.input))[0]
    paths = [os.path.join(args.output_dir, f"{stem}_{name}.jsonl") for name in NAMES]
    outputs = [open(path, "wb") for path in paths]
    try:
        for position, (_, line, _, _) in enumerate(iter_lines(args.input)):
            outputs[split_of[position]].write(line.rstrip(b"\r\n") + b"\n")
    finally:
        for output in outputs:
            output.close()
    for name, path, size in zip(NAMES, paths, np.bincount(split_of, minlength=3)):
        print(f"{name}: {size} documents -> {path}")


if __name__ == "__main__":
    main()
