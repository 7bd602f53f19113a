"""Rebuild data/jargon_file.jsonl, the bundled sample corpus, from Debian's jargon-text package.

The Jargon File 4.4.7 is in the public domain. Each lexicon entry becomes one loose-JSON document,
{"title": headword, "text": entry}, with hard-wrapped paragraphs joined into single lines.

    apt-get install jargon-text
    python scripts/make_sample_corpus.py [--source /usr/share/doc/jargon-text/jargon.txt.gz] [--output data/jargon_file.jsonl]
"""

import argparse
import gzip
import json
import re

ENTRY_START = re.compile(r"^   :(?P<title>[^:]+):")


def _paragraphs(lines):
    text = "\n".join(line.strip() for line in lines).strip()
    return "\n\n".join(" ".join(block.split("\n")) for block in re.split(r"\n\s*\n", text) if block.strip())


def entries(lines):
    """Yield (title, text) for every lexicon entry (from the glossary to the first appendix)."""
    start = lines.index("Glossary")
    end = next(i for i, line in enumerate(lines) if line.replace("\u00a0", " ").startswith("Appendix A."))
    title, body = None, []
    for line in lines[start:end]:
        match = ENTRY_START.match(line)
        if match:
            if title is not None:
                yield title, _paragraphs(body)
            title, body = match["title"], [line.strip()[1:].replace(":", "", 1)]
        elif title is not None:
            body.append(line)
    if title is not None:
        yield title, _paragraphs(body)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default="/usr/share/doc/jargon-text/jargon.txt.gz")
    parser.add_argument("--output", default="data/jargon_file.jsonl")
    args = parser.parse_args()
    with gzip.open(args.source, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    count = 0
    with open(args.output, "w", encoding="utf-8") as out:
        for title, text in entries(lines):
            out.write(json.dumps({"title": title, "text": text}, ensure_ascii=False) + "\n")
            count += 1
    print(f"wrote {count} documents to {args.output}")


if __name__ == "__main__":
    main()
