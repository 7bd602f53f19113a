"""scripts/clean_corpus.py on real text: the near-duplicate stage finds planted near duplicates (copies with a
few words changed, with another header and footer, exact copies) and leaves distinct documents on the same
topic; the language filter keeps English and drops other languages (lm-eval's translated passages); a run
killed mid-way and started again writes exactly the unbroken run's output; the URL filter's rules."""

import glob
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from data_utils.cleaning import LanguageFilter, UrlFilter, clean
from data_utils.near_duplicates import bands_and_rows

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts", "clean_corpus.py")


def _write(path, records):
    path.write_text("".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records), encoding="utf-8")
    return str(path)


def _clean(*argv):
    sys.path.insert(0, os.path.dirname(SCRIPT))
    import clean_corpus
    return clean_corpus.main(list(argv))


def _planted(sample_texts):
    """Distinct documents (Jargon File entries of 200+ words, and consecutive 200-word passages of the longest
    entries: distinct texts on one topic), then planted copies of the first 60: 20 with 3 words changed,
    20 with a new header and footer line, 20 exact."""
    long_texts = sorted((t for t in sample_texts if len(t.split()) >= 200), key=lambda t: -len(t))
    passages = [" ".join(t.split()[i:i + 200]) for t in long_texts[:5] for i in range(0, len(t.split()) - 199, 200)]
    distinct = passages + [t for t in long_texts[5:]]
    random.seed(3)
    planted = []
    for number, text in enumerate(distinct[:60]):
        words = text.split()
        if number < 20:
            for position in random.sample(range(len(words)), 3):
                words[position] = "zebra"
            planted.append(" ".join(words))
        elif number < 40:
            planted.append(f"Posted on the archive mirror, entry {number} of the list\n{text}\n"
                           "Copyright the maintainers; all rights reserved; see the licence file")
        else:
            planted.append(text)
    return distinct, planted


def test_near_duplicates_are_found_and_distinct_documents_on_one_topic_kept(tmp_path, sample_texts):
    distinct, planted = _planted(sample_texts)
    records = [{"text": t, "id": f"d{i}"} for i, t in enumerate(distinct)] + \
              [{"text": t, "id": f"p{i}"} for i, t in enumerate(planted)]
    report = _clean("--input", _write(tmp_path / "in.jsonl", records), "--output", str(tmp_path / "out.jsonl"),
                    "--stages", "exact,near")
    kept = [json.loads(line)["id"] for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    planted_removed = len(planted) - sum(i.startswith("p") for i in kept)
    distinct_removed = len(distinct) - sum(i.startswith("d") for i in kept)
    print(f"\nplanted near duplicates removed {planted_removed}/{len(planted)}; distinct documents removed "
          f"{distinct_removed}/{len(distinct)}; {report}")
    assert planted_removed >= 0.95 * len(planted) and distinct_removed <= 0.01 * len(distinct)
    assert report["exact duplicate"] >= 20 and report["read"] == len(records)
    pairs = [json.loads(line) for line in (tmp_path / "out.jsonl.duplicates.jsonl").read_text().splitlines()]
    assert len(pairs) == planted_removed + distinct_removed
    for pair in pairs:  # each names the kept document it repeats, by its line in the output
        assert pair["similarity"] >= 0.7 and 1 <= pair["kept"] <= len(kept)


def _translated_passages():
    """Real text in other languages that installs offline: the few-shot passages of lm-eval's translated MMLU
    tasks (de, es, fr, it, pt, hi, th)."""
    import lm_eval
    import yaml

    class Loader(yaml.SafeLoader):
        pass
    Loader.add_multi_constructor("", lambda loader, suffix, node: None)
    base = os.path.join(os.path.dirname(lm_eval.__file__), "tasks", "llama3", "instruct")
    passages = []
    for language in ("de", "es", "fr", "it", "pt", "hi", "th"):
        for path in sorted(glob.glob(os.path.join(base, f"mmlu_{language}", "*.yaml")))[:40]:
            with open(path, encoding="utf-8") as f:
                config = yaml.load(f, Loader=Loader) or {}
            for sample in (config.get("fewshot_config") or {}).get("samples") or []:
                if len(sample.get("input_question", "")) > 100:
                    passages.append((language, sample["input_question"]))
    return passages


def test_the_language_filter_keeps_english_and_drops_other_languages(sample_texts):
    language = LanguageFilter(["en"])
    english = [t for t in sample_texts if len(t) > 100][:600]
    others = _translated_passages()
    assert len({code for code, _ in others}) == 7 and len(others) > 500
    kept = sum(language(text) is None for text in english)
    dropped = sum(language(text) is not None for _, text in others)
    print(f"\nEnglish kept {kept}/{len(english)}; other languages dropped {dropped}/{len(others)}")
    assert kept >= 0.98 * len(english) and dropped >= 0.95 * len(others)


def test_a_killed_run_started_again_writes_the_unbroken_runs_output(tmp_path, sample_texts):
    records = [{"text": t, "url": f"https://site{i % 5}.org/{i}", "meta": {"n": i}} for i, t in
               enumerate(sample_texts[:500])]
    records += [{"text": t + "\n", "url": "https://mirror.net/x"} for t in sample_texts[:100]]  # duplicates
    records.append({"text": sample_texts[5], "url": "https://cdn.example.com/photo.JPG"})
    source = _write(tmp_path / "in.jsonl", records)
    argv = ["--input", source, "--shard-size", "10", "--stages", "urls,clean,quality,exact,near"]
    _clean(*argv, "--output", str(tmp_path / "unbroken.jsonl"), "--workers", "2")
    broken = str(tmp_path / "broken.jsonl")
    environment = {**os.environ, "TORCH_EXTENSIONS_DIR": str(tmp_path / "extensions")}
    process = subprocess.Popen([sys.executable, SCRIPT, *argv, "--output", broken], env=environment,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while not os.path.exists(f"{broken}.work/shard_000003.json") and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    finished = len(glob.glob(f"{broken}.work/shard_*.json"))
    assert 3 <= finished < 61 and not os.path.exists(broken), finished  # killed mid-way (61 shards in all)
    _clean(*argv, "--output", broken)
    for suffix in ("", ".duplicates.jsonl"):
        assert open(broken + suffix, "rb").read() == open(str(tmp_path / "unbroken.jsonl") + suffix, "rb").read()
    kept = [json.loads(line) for line in open(broken, encoding="utf-8")]
    as_given = {json.dumps({**record, "text": clean(record["text"])}, sort_keys=True) for record in records}
    assert 0 < len(kept) < 500 and all(json.dumps(record, sort_keys=True) in as_given for record in kept)
    assert not os.path.exists(broken + ".work")


@pytest.mark.parametrize("url, reason", [
    ("https://en.wikipedia.org/wiki/Hacker", None),
    ("http://www.badsite.com/page", "url blacklisted domain"),
    ("https://news.badsite.com/a?b=c", "url blacklisted domain"),
    ("https://example.org/files/paper.PDF", "url media file"),
    ("ftp://example.org/readme", "url malformed"),
    ("not a url", "url malformed"),
])
def test_the_url_filter(url, reason):
    assert UrlFilter(frozenset({"badsite.com"}))({"url": url, "text": "x"}) == reason


@pytest.mark.parametrize("threshold, num_perm, expected", [(0.7, 128, (14, 9)), (0.8, 128, (9, 13)), (0.5, 128, (25, 5)),
                                                           (0.9, 128, (5, 25))])
def test_bands_and_rows_weighing_misses_as_false_positives_are_datasketchs(threshold, num_perm, expected):
    """datasketch 2.0's MinHashLSH splits 128 values this way for these thresholds (its _optimal_param with
    its default equal weights)."""
    assert bands_and_rows(threshold, num_perm, false_negative_weight=0.5) == expected
