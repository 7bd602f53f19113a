"""Clean text with ftfy and put one sentence per line, in every document of a loose-JSON file.

    python scripts/presplit_sentences_json.py INPUT.jsonl OUTPUT.jsonl [--text-key text]

Sentences are split with NLTK's punkt model (see data_utils/sentences.py: it works offline, and says
so when it must fall back to a plain rule). The output keeps every other field.
"""

import argparse
import json
import os
import sys

import ftfy

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data_utils.lazy_loader import iter_lines, parse_document  # noqa: E402
from data_utils.sentences import sentence_splitter, split_sentences  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--text-key", default="text")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.input):
        parser.error(f"{args.input}: no such file")
    print(f"splitting sentences with {sentence_splitter()[1]}", file=sys.stderr)
    documents = 0
    with open(args.output + ".tmp", "w", encoding="utf-8") as out:
        for line_number, line, _, _ in iter_lines(args.input):
            text = parse_document(line, args.text_key, args.input, line_number)
            document = json.loads(line)
            document[args.text_key] = "\n".join(split_sentences(ftfy.fix_text(text), keep_newlines=True))
            out.write(json.dumps(document, ensure_ascii=False) + "\n")
            documents += 1
    os.replace(args.output + ".tmp", args.output)
    print(f"wrote {documents} documents to {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
