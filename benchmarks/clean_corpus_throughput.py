"""Throughput of scripts/clean_corpus.py's stages, per worker, and the memory of its duplicate index.

    python benchmarks/clean_corpus_throughput.py [--generated-mb 100] [--workers 2] [--index-documents 200000]

Prints, on this CPU:
- MB/s of each stage alone in one process over the bundled corpus (the Jargon File, real English);
- the whole pipeline (all stages, --workers processes) over a generated file of --generated-mb MB: the
  bundled documents repeated with a few words changed in each copy, so the near-duplicate stage has work;
- the language identifiers measured for the choice in data_utils/cleaning.py (fastText lid.176, and
  pycld2 and py3langid when installed): English kept and other languages dropped on the bundled corpus and
  lm-eval's translated MMLU passages, and their speed;
- the memory of the duplicate indexes (LSH and exact hashes) per million kept documents.
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import tracemalloc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from data_utils.cleaning import LanguageFilter, UrlFilter, clean, quality_problem  # noqa: E402
from data_utils.corpora import NAMED_CORPORA  # noqa: E402
from data_utils.near_duplicates import ExactIndex, NearDuplicateIndex, Signatures, exact_hash  # noqa: E402
from data_utils.tokenization import make_tokenizer  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _rate(texts, function):
    started = time.perf_counter()
    for text in texts:
        function(text)
    return sum(len(t.encode("utf-8")) for t in texts) / 1e6 / (time.perf_counter() - started)


def stage_rates(texts):
    tokenizer, language, signatures = make_tokenizer("GPT2BPETokenizer"), LanguageFilter(["en"]), Signatures()
    index, urls = NearDuplicateIndex(), UrlFilter(frozenset({"example.com"}))

    def near(text):
        signature = signatures(text)
        if index.match(signature) is None:
            index.add(signature)
    stages = {"urls": lambda t: urls({"url": "https://www.example.org/a/b.html", "text": t}), "clean": clean,
              "language": language, "length": tokenizer.tokenize,
              "quality": lambda t: quality_problem(t, 0.6, 0.3, (3.0, 10.0)), "exact": exact_hash, "near": near}
    for name, function in stages.items():
        print(f"{name:9s} {_rate(texts, function):8.2f} MB/s per worker", flush=True)


def generated_corpus(texts, megabytes, path):
    random.seed(0)
    written, copy = 0, 0
    with open(path, "w", encoding="utf-8") as f:
        while written < megabytes * 1e6:
            for text in texts:
                words = text.split()
                for position in random.sample(range(len(words)), min(3, len(words))):
                    words[position] = f"w{copy}"
                line = json.dumps({"text": " ".join(words), "url": f"https://site{copy % 97}.org/{copy}"}) + "\n"
                f.write(line)
                written += len(line.encode("utf-8"))
            copy += 1


def pipeline(texts, megabytes, workers):
    with tempfile.TemporaryDirectory() as folder:
        source = os.path.join(folder, "generated.jsonl")
        generated_corpus(texts, megabytes, source)
        started = time.perf_counter()
        done = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "clean_corpus.py"), "--input", source,
                               "--output", os.path.join(folder, "out.jsonl"), "--workers", str(workers),
                               "--log-interval", "1000000"], capture_output=True, text=True)
        seconds = time.perf_counter() - started
        size = os.path.getsize(source) / 1e6
    print(done.stderr.strip().splitlines()[-2] if done.returncode == 0 else done.stderr[-2000:])
    print(f"pipeline: {size:.0f} MB in {seconds:.1f} s with {workers} workers: {size / seconds:.2f} MB/s, "
          f"{size / seconds / workers:.2f} MB/s per worker (start-up included)", flush=True)


def language_identifiers(english):
    sys.path.insert(0, os.path.join(REPO, "tests"))
    from test_clean_corpus import _translated_passages
    others = [text for _, text in _translated_passages()]
    fasttext_model = LanguageFilter(["en"])
    candidates = {"fastText lid.176.ftz": lambda t: fasttext_model.language(t)[0]}
    try:
        import pycld2
        candidates["pycld2"] = lambda t: pycld2.detect(t)[2][0][1]
    except ImportError:
        print("pycld2 not installed: pip install pycld2 to compare it")
    try:
        import py3langid
        candidates["py3langid"] = lambda t: py3langid.classify(t)[0]
    except ImportError:
        print("py3langid not installed: pip install py3langid to compare it")
    for name, identify in candidates.items():
        started = time.perf_counter()
        kept = sum(identify(t) == "en" for t in english) / len(english)
        dropped = sum(identify(t) != "en" for t in others) / len(others)
        rate = sum(len(t.encode("utf-8")) for t in english + others) / 1e6 / (time.perf_counter() - started)
        print(f"{name:22s} English kept {kept:.4f} of {len(english)}, others dropped {dropped:.4f} of {len(others)}, "
              f"{rate:.2f} MB/s", flush=True)


def index_memory(documents):
    rng = np.random.default_rng(0)
    tracemalloc.start()
    index, exact = NearDuplicateIndex(), ExactIndex()
    for number in range(documents):
        index.add(rng.integers(0, 2 ** 32, size=128, dtype=np.uint32))
        exact.add(exact_hash(str(number)), number + 1)
        if len(index.store.pending) == 10000:
            index.store.settle("shard file")  # as each shard is written: its signatures are then on disk
    used = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    print(f"duplicate indexes: {used / documents:.0f} bytes per kept document, {used / documents * 1e6 / 2 ** 30:.2f} "
          f"GiB per million ({index.bands} LSH bands and the exact hashes; measured over {documents} documents)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generated-mb", type=float, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--index-documents", type=int, default=200000)
    args = parser.parse_args()
    with open(NAMED_CORPORA["sample"].path, encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f]
    print(f"bundled corpus: {len(texts)} documents, {sum(len(t.encode()) for t in texts) / 1e6:.1f} MB")
    stage_rates(texts)
    language_identifiers([t for t in texts if len(t) > 100])
    index_memory(args.index_documents)
    pipeline(texts, args.generated_mb, args.workers)


if __name__ == "__main__":
    main()
