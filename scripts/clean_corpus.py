"""Clean, filter and deduplicate raw web text before preprocessing, in the steps of Megatron-LM's openwebtext
tools: URL filter, ftfy clean-up, language, minimum length, quality heuristics, exact and near duplicates.

    python scripts/clean_corpus.py --input crawl/ --output clean.jsonl --workers 8
    python scripts/clean_corpus.py --input pile/00.jsonl.zst --output clean.jsonl --stages clean,exact,near \\
        --jaccard-threshold 0.8 --url-blacklist blacklist.txt --min-tokens 128
    python scripts/preprocess_data.py --input clean.jsonl --append-eod --output-prefix data/clean ...

--input is loose JSON, .jsonl.zst / .json.zst or .txt files (one document each), or a folder of them
(data_utils/raw_documents.py). --output is loose JSON: every kept record as it was, its text cleaned
(`clean`); OUTPUT.duplicates.jsonl pairs each dropped duplicate with the kept document it repeats (its
line number in OUTPUT). --stages picks stages (all by default), always run in this order:

    urls       records with a "url": malformed, on a --url-blacklist domain, or media/binary links
    clean      ftfy's repairs (data_utils/cleaning.py)
    language   fastText lid.176 in --languages at --min-language-probability
    length     at least --min-tokens tokens of the tokenizer flags (GPT-2's BPE by default)
    quality    --min-alpha-fraction, --max-repeated-line-fraction, --mean-word-length
    exact      the same text up to case and whitespace
    near       MinHash LSH at --jaccard-threshold over --shingle-size word shingles (data_utils/near_duplicates.py)

Worker processes run the per-document stages and the signatures; this process checks duplicates in
input order, so the output does not depend on --workers. Work goes in shards of --shard-size input
documents under OUTPUT.work/, each made whole (kept records, duplicates, the signatures and hashes of
its kept documents) before it counts as done: a killed run started again continues after its last
finished shard and writes exactly what an unbroken run writes. Memory holds the duplicate indexes only
(band and exact hashes of the kept documents, 0.23 GiB per million), never the corpus.
"""

import argparse
import itertools
import json
import multiprocessing
import os
import shutil
import sys
from collections import Counter

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from arguments import ArgumentParser, add_tokenizer_args, explicit_flags, tokenizer_problems  # noqa: E402
from data_utils.cleaning import LanguageFilter, UrlFilter, clean, quality_problem, read_domains  # noqa: E402
from data_utils.lazy_loader import MalformedJsonError, parse_document  # noqa: E402
from data_utils.near_duplicates import ExactIndex, NearDuplicateIndex, Signatures, exact_hash  # noqa: E402
from data_utils.progress import Progress  # noqa: E402
from data_utils.raw_documents import input_bytes, text_lines  # noqa: E402
from data_utils.tokenization import make_tokenizer_from_args  # noqa: E402
from data_utils.worker_pool import in_order  # noqa: E402

STAGES = ("urls", "clean", "language", "length", "quality", "exact", "near")
PREVIEW_CHARACTERS = 300


class DocumentStages:
    """The per-document stages and the signatures. initializer() builds the filters once per worker process,
    as class state (each task unpickles its own copy of the instance)."""

    def __init__(self, args):
        self.args = args

    def initializer(self):
        args, stages = self.args, self.args.stages
        DocumentStages.urls = UrlFilter(read_domains(args.url_blacklist) if args.url_blacklist else frozenset())
        DocumentStages.language = LanguageFilter(args.languages, args.min_language_probability) \
            if "language" in stages else None
        DocumentStages.tokenizer = make_tokenizer_from_args(args) if "length" in stages else None
        DocumentStages.signatures = Signatures(args.num_perm, args.shingle_size, args.seed) if "near" in stages else None

    def _drop_reason(self, record, text):
        args, stages = self.args, self.args.stages
        if "urls" in stages and (reason := self.urls(record)):
            return reason
        if self.language and (reason := self.language(text)):
            return reason
        if self.tokenizer and len(self.tokenizer.tokenize(text)) < args.min_tokens:
            return "too short"
        if "quality" in stages:
            return quality_problem(text, args.min_alpha_fraction, args.max_repeated_line_fraction,
                                   args.mean_word_length)
        return None

    def run(self, item):
        """(output line or None, reason dropped or None, exact hash, signature, where, input position)."""
        source, number, line, position = item
        where = f"{source}:{number}"
        try:
            text = parse_document(line, self.args.text_key, source, number, "--text-key")
        except MalformedJsonError as error:
            return None, f"malformed: {error}", None, None, where, position
        record = json.loads(line)
        if "clean" in self.args.stages and (cleaned := clean(text)) != text:
            text = record[self.args.text_key] = cleaned
            line = json.dumps(record, ensure_ascii=False).encode("utf-8")
        reason = self._drop_reason(record, text)
        if reason:
            return None, reason, None, None, where, position
        return (line, None, exact_hash(text) if "exact" in self.args.stages else None,
                self.signatures(text) if self.signatures else None, where, position)

    def run_batch(self, items):
        return [self.run(item) for item in items]


class Shards:
    """OUTPUT.work/: shard_NNNNNN.{jsonl,duplicates.jsonl,sig,hashes} per shard and shard_NNNNNN.json, the
    shard's counts, written last (every file renamed into place whole): a shard is done when its .json is."""

    def __init__(self, folder):
        self.folder = folder
        os.makedirs(folder, exist_ok=True)

    def path(self, shard, suffix):
        return os.path.join(self.folder, f"shard_{shard:06d}.{suffix}")

    def done(self):
        """The counts of the finished shards, in order (a gap ends them); files of others are removed."""
        counts = []
        while os.path.isfile(self.path(len(counts), "json")):
            with open(self.path(len(counts), "json"), encoding="utf-8") as f:
                counts.append(json.load(f))
        finished = {f"shard_{shard:06d}." for shard in range(len(counts))}
        for name in os.listdir(self.folder):
            if not any(name.startswith(prefix) for prefix in finished):
                os.remove(os.path.join(self.folder, name))
        return counts

    def write(self, shard, suffix, data):
        temporary = self.path(shard, suffix) + ".tmp"
        with open(temporary, "wb") as f:
            f.write(data)
        os.replace(temporary, self.path(shard, suffix))


class Deduplicator:
    """Exact and near duplicates among the kept documents, checked in input order; a kept document's key
    is its line number in the output."""

    def __init__(self, args):
        self.exact = ExactIndex() if "exact" in args.stages else None
        self.near = NearDuplicateIndex(args.jaccard_threshold, args.num_perm) if "near" in args.stages else None
        self.kept = 0

    def restore(self, shards, shard, kept):
        """Take a finished shard's kept documents into the indexes (a restarted run)."""
        if self.exact is not None:
            with open(shards.path(shard, "hashes"), "rb") as f:
                data = f.read()
            for row in range(kept):
                self.exact.add(data[16 * row:16 * row + 16], self.kept + row + 1)
        if self.near is not None:
            self.near.restore(shards.path(shard, "sig"))
        self.kept += kept

    def check(self, digest, signature):
        """None when the document is new (it is then indexed as kept), else (reason, kept line, similarity)."""
        if self.exact is not None and (kept_line := self.exact.find(digest)) is not None:
            return "exact duplicate", kept_line, 1.0
        if self.near is not None and (found := self.near.match(signature)):
            return ("near duplicate", *found)
        self.kept += 1
        if self.exact is not None:
            self.exact.add(digest, self.kept)
        if self.near is not None:
            self.near.add(signature)
        return None


def _duplicate_line(found, where, line, text_key):
    reason, kept_line, score = found
    return json.dumps({"reason": reason, "similarity": round(score, 4), "kept": kept_line, "dropped": where,
                       "text": json.loads(line)[text_key][:PREVIEW_CHARACTERS]}, ensure_ascii=False).encode("utf-8")


def _run_shard(shard, results, dedup, shards, args, progress, totals):
    """Check one shard's processed documents and write the shard whole; totals gains its counts."""
    kept, duplicates, hashes, signatures, counts = [], [], [], [], Counter()
    position = totals.get("position", 0)
    for line, reason, digest, signature, where, position in results:
        counts["read"] += 1
        if reason is None and (found := dedup.check(digest, signature)) is not None:
            duplicates.append(_duplicate_line(found, where, line, args.text_key))
            reason = found[0]
        if reason is None:
            kept.append(line)
            hashes.append(digest or b"")
            signatures.append(signature)
            counts["kept"] += 1
        elif reason.startswith("malformed"):
            if not args.skip_malformed:
                raise MalformedJsonError(reason.removeprefix("malformed: ") + " (or pass --skip-malformed)")
            counts["malformed"] += 1
        else:
            counts[reason] += 1
        progress.show(totals["read"] + counts["read"], position)
    shards.write(shard, "jsonl", b"".join(line + b"\n" for line in kept))
    shards.write(shard, "duplicates.jsonl", b"".join(line + b"\n" for line in duplicates))
    shards.write(shard, "hashes", b"".join(hashes))
    if dedup.near is not None:
        shards.write(shard, "sig", np.asarray(signatures, dtype=np.uint32).reshape(-1, args.num_perm).tobytes())
        dedup.near.store.settle(shards.path(shard, "sig"))
    shards.write(shard, "json", json.dumps({**counts, "position": position}).encode())
    totals.update(counts)
    totals["position"] = position


def _join(shards, count, suffix, output):
    """The shards' files of one kind, concatenated into `output` (renamed into place when whole)."""
    with open(output + ".tmp", "wb") as out:
        for shard in range(count):
            with open(shards.path(shard, suffix), "rb") as f:
                shutil.copyfileobj(f, out, 1 << 20)
    os.replace(output + ".tmp", output)


def clean_corpus(args):
    shards = Shards(args.output + ".work")
    done = shards.done()
    stages = DocumentStages(args)
    dedup = Deduplicator(args)
    totals = Counter()
    for shard, counts in enumerate(done):
        dedup.restore(shards, shard, counts.get("kept", 0))
        totals.update(counts)
        totals["position"] = counts["position"]
    if done:
        print(f"resuming after {len(done)} finished shards ({totals['read']} documents) in {shards.folder}",
              file=sys.stderr)
    documents = text_lines(args.input, args.text_key)
    for _ in range(totals["read"]):
        next(documents)
    progress = Progress(input_bytes(args.input), args.log_interval)
    pool = multiprocessing.Pool(args.workers, initializer=stages.initializer) if args.workers > 1 else None
    if pool is None:
        stages.initializer()
    try:
        results = in_order(pool, args.workers, stages.run_batch, documents)
        shard = len(done)
        while True:
            batch = list(itertools.islice(results, args.shard_size))
            if not batch:
                break
            _run_shard(shard, batch, dedup, shards, args, progress, totals)
            shard += 1
    finally:
        if pool:
            pool.close()
            pool.join()
    progress.show(totals["read"], totals["position"], final=True)
    _join(shards, shard, "duplicates.jsonl", args.output + ".duplicates.jsonl")
    _join(shards, shard, "jsonl", args.output)
    shutil.rmtree(shards.folder)
    return _report(args, totals)


def _report(args, totals):
    dropped = {reason: count for reason, count in sorted(totals.items()) if reason not in ("read", "kept", "position")}
    print(f"read {totals['read']} documents, kept {totals['kept']}, dropped {sum(dropped.values())}: "
          + (", ".join(f"{reason} {count}" for reason, count in dropped.items()) or "none"), file=sys.stderr)
    print(f"wrote {args.output} and {args.output}.duplicates.jsonl", file=sys.stderr)
    return {"read": totals["read"], "kept": totals["kept"], **dropped}


def get_args(argv=None):
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_argument_group("input and output")
    group.add_argument("--input", required=True, help="loose JSON, .jsonl.zst / .json.zst, .txt files, or a folder")
    group.add_argument("--output", required=True, help="the kept records, loose JSON")
    group.add_argument("--text-key", default="text", help="the key of the text in each record")
    group.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, of {', '.join(STAGES)}")
    group.add_argument("--workers", type=int, default=1, help="processes for the per-document stages")
    group.add_argument("--shard-size", type=int, default=10000, help="input documents per shard (a restart's unit)")
    group.add_argument("--log-interval", type=int, default=10000, help="documents between progress lines")
    group.add_argument("--skip-malformed", action="store_true", help="count malformed lines instead of stopping")
    filters = parser.add_argument_group("filters")
    filters.add_argument("--url-blacklist", default=None, help="a file of domains to drop, one per line")
    filters.add_argument("--languages", nargs="+", default=["en"], help="ISO 639-1 codes to keep")
    filters.add_argument("--min-language-probability", type=float, default=0.5)
    filters.add_argument("--min-tokens", type=int, default=128, help="tokens of the tokenizer flags below, at least")
    filters.add_argument("--min-alpha-fraction", type=float, default=0.6,
                         help="letters among the non-space characters, at least")
    filters.add_argument("--max-repeated-line-fraction", type=float, default=0.3,
                         help="lines repeating another line of the document, at most")
    filters.add_argument("--mean-word-length", type=float, nargs=2, default=[3.0, 10.0], metavar=("MIN", "MAX"))
    near = parser.add_argument_group("duplicates")
    near.add_argument("--jaccard-threshold", type=float, default=0.7,
                      help="estimated Jaccard similarity of word shingles at which a document is a near duplicate")
    near.add_argument("--shingle-size", type=int, default=5, help="words per shingle")
    near.add_argument("--num-perm", type=int, default=128, help="MinHash permutations")
    near.add_argument("--seed", type=int, default=1, help="of the MinHash permutations")
    add_tokenizer_args(parser)
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    args.stages = [stage.strip() for stage in args.stages.split(",") if stage.strip()]
    unknown = sorted(set(args.stages) - set(STAGES))
    if unknown or not args.stages:
        parser.error(f"--stages {','.join(args.stages)}: choose among {','.join(STAGES)}")
    if args.workers < 1 or args.shard_size < 1 or not 0 < args.jaccard_threshold <= 1 or args.shingle_size < 1:
        parser.error("--workers and --shard-size at least 1, --shingle-size at least 1, --jaccard-threshold in (0, 1]")
    problems = tokenizer_problems(args, explicit_flags(parser, argv)) if "length" in args.stages else []
    if problems:
        parser.error(problems[0])
    return args


def main(argv=None):
    args = get_args(argv)
    try:
        return clean_corpus(args)
    except (MalformedJsonError, ValueError, FileNotFoundError) as error:
        sys.exit(f"error: {error} (finished shards are kept in {args.output}.work: run again to continue)")


if __name__ == "__main__":
    main()
