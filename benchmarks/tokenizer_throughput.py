"""Preprocessing throughput of the GPT-2 tokenizer, ours (tiktoken) beside transformers.GPT2TokenizerFast.

    python benchmarks/tokenizer_throughput.py [--input corpus.jsonl] [--repeat 4] [--workers 1 2]

Each tokenizer encodes every document of the corpus (repeated --repeat times) in --workers
processes, as scripts/preprocess_data.py does; the line per run gives MB/s and tokens/s in all and
per worker, and checks that both produced the same ids. A last line per worker count runs the whole
scripts/preprocess_data.py on the same documents (JSON lines in, .bin/.idx out, start-up included)
and gives its MB/s of text against GPT2TokenizerFast's encoding alone.
"""

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data_utils.corpora import resolve_corpus  # noqa: E402
from data_utils.lazy_loader import LooseJsonDataset  # noqa: E402
from data_utils.tokenization import make_tokenizer, read_gpt2_files  # noqa: E402

_ENCODE = None


def _ours():
    return make_tokenizer("GPT2BPETokenizer").tokenize


def _transformers():
    from transformers import GPT2TokenizerFast
    vocab, merges = read_gpt2_files()
    tokenizer = GPT2TokenizerFast(vocab=vocab, merges=merges)
    return tokenizer.encode


TOKENIZERS = {"ours (tiktoken)": _ours, "transformers GPT2TokenizerFast": _transformers}


def _init(name):
    global _ENCODE
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _ENCODE = TOKENIZERS[name]()


def _encode(text):
    return _ENCODE(text)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", default="sample", help="a named corpus or a loose-JSON file")
    parser.add_argument("--text-key", default="text")
    parser.add_argument("--repeat", type=int, default=4)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    corpus = resolve_corpus(args.input, args.text_key)
    texts = list(LooseJsonDataset(corpus.path, corpus.text_key)) * args.repeat
    megabytes = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    print(f"corpus {corpus.path} x{args.repeat}: {len(texts)} documents, {megabytes:.1f} MB; {os.cpu_count()} cores")
    for workers in args.workers:
        ids = {}
        for name in TOKENIZERS:
            with multiprocessing.Pool(workers, initializer=_init, initargs=(name,)) as pool:
                pool.map(_encode, texts[:workers * 8])  # warm up every worker
                started = time.perf_counter()
                ids[name] = pool.map(_encode, texts, chunksize=64)
                seconds = time.perf_counter() - started
            transformers_seconds = seconds
            tokens = sum(map(len, ids[name]))
            print(f"{name:32s} workers {workers}: {megabytes / seconds:7.2f} MB/s ({megabytes / seconds / workers:6.2f} "
                  f"per worker), {tokens / seconds / 1e6:6.2f} M tokens/s ({tokens / seconds / workers / 1e6:5.2f} "
                  f"per worker)")
        print(f"  same ids from both: {len({json.dumps(v) for v in ids.values()}) == 1}")
        seconds = _preprocess_data(texts, workers)
        print(f"{'scripts/preprocess_data.py':32s} workers {workers}: {megabytes / seconds:7.2f} MB/s "
              f"({megabytes / seconds / workers:6.2f} per worker): {transformers_seconds / seconds:.1f}x "
              "GPT2TokenizerFast's encoding alone")


def _preprocess_data(texts, workers):
    """Seconds of the whole preprocessing script on these documents (one JSON line each)."""
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts", "preprocess_data.py")
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "corpus.jsonl")
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(json.dumps({"text": text}) + "\n" for text in texts)
        started = time.perf_counter()
        subprocess.run([sys.executable, script, "--input", path, "--output-prefix", os.path.join(folder, "out"),
                        "--tokenizer-type", "GPT2BPETokenizer", "--append-eod", "--workers", str(workers)], check=True,
                       capture_output=True)
        return time.perf_counter() - started


if __name__ == "__main__":
    main()
