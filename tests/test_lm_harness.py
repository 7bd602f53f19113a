"""scripts/evaluate_lm_harness.py against lm-eval's own `hf` model on the same transformers GPT-2 (random
weights, GPT-2's tokenizer): four local tasks written here as YAML + JSON over real text (a LAMBADA-style
last word, multiple choice, rolling perplexity, generation until a stop string) give the same metrics and
the same per-document log-likelihoods (1e-4) and generated texts, at TP 1, TP 2, and two data-parallel
processes."""

import json
import math
import os
import sys

import pytest
import torch

from distributed import run_distributed

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASKS = ("last_word_local", "choice_local", "rolling_local", "generate_local")

TASK_YAML = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
  cache_dir: {cache}
test_split: test
"""
TASK_BODIES = {
    "last_word_local": """output_type: loglikelihood
doc_to_text: "{{{{text.split(' ')[:-1]|join(' ')}}}}"
doc_to_target: "{{{{' '+text.split(' ')[-1]}}}}"
metric_list:
  - metric: perplexity
    aggregation: perplexity
    higher_is_better: false
  - metric: acc
    aggregation: mean
    higher_is_better: true
""",
    "choice_local": """output_type: multiple_choice
doc_to_text: "{{{{query}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{gold}}}}"
metric_list:
  - metric: acc
  - metric: acc_norm
""",
    "rolling_local": """output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: word_perplexity
  - metric: byte_perplexity
  - metric: bits_per_byte
""",
    "generate_local": """output_type: generate_until
doc_to_text: "{{{{query}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: [".", ";"]
  max_gen_toks: 12
  do_sample: false
metric_list:
  - metric: exact_match
""",
}


def _documents(texts):
    """Passages of real text: their last words, three endings to choose from (the real one second),
    passages long enough to need several rolling windows, and prompts to continue."""
    passages = [" ".join(text.split()[:40]) for text in texts[:12]]
    endings = [" " + " ".join(text.split()[8:16]) for text in texts[:12]]
    return {
        "last_word_local": [{"text": passage} for passage in passages],
        "choice_local": [{"query": " ".join(text.split()[:8]), "choices": [endings[i - 1], endings[i], endings[i - 2]],
                          "gold": 1} for i, text in enumerate(texts[:12])],
        "rolling_local": [{"text": " ".join(text.split()[:150])} for text in texts[:3]] + [{"text": "Short one."}],
        "generate_local": [{"query": " ".join(text.split()[:10]), "answer": text.split()[10]} for text in texts[:6]],
    }


@pytest.fixture(scope="module")
def harness(tmp_path_factory, sample_texts):
    """The transformers folder (with GPT-2's tokenizer files), the task folder, and lm-eval's hf results."""
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    from data_utils.tokenization import read_gpt2_files
    root = tmp_path_factory.mktemp("lm_harness")
    vocab, merges = read_gpt2_files()
    tokenizer = GPT2TokenizerFast(vocab=vocab, merges=merges, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                  unk_token="<|endoftext|>")
    assert len(tokenizer) == 50257
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_positions=64, n_embd=64, n_layer=2, n_head=4, initializer_range=0.1))
    model.save_pretrained(root / "hf")
    tokenizer.save_pretrained(root / "hf")
    (root / "tasks").mkdir()
    for name, documents in _documents(sample_texts).items():
        data = root / f"{name}.jsonl"
        data.write_text("".join(json.dumps(d) + "\n" for d in documents), encoding="utf-8")
        (root / "tasks" / f"{name}.yaml").write_text(
            TASK_YAML.format(name=name, data=data, cache=root / "datasets") + TASK_BODIES[name].format(),
            encoding="utf-8")
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager
    from lm_eval.utils import handle_non_serializable
    with pytest.MonkeyPatch.context() as environment:
        environment.setenv("HF_HUB_OFFLINE", "1")
        environment.setenv("TOKENIZERS_PARALLELISM", "false")
        done = simple_evaluate(model="hf", model_args=f"pretrained={root / 'hf'}", tasks=list(TASKS), batch_size=4,
                               task_manager=TaskManager(include_path=str(root / "tasks"), include_defaults=False),
                               device="cpu", log_samples=True)
    reference = json.loads(json.dumps({"results": done["results"], "samples": done["samples"]},
                                      default=handle_non_serializable))
    return {"root": root, "hf": str(root / "hf"), "tasks": str(root / "tasks"), "reference": reference}


def _evaluate(argv):
    sys.path.insert(0, os.path.join(REPO, "scripts"))
    import evaluate_lm_harness
    from lm_eval.utils import handle_non_serializable
    results = evaluate_lm_harness.main(argv)
    if results is None:  # lm-eval returns the results on the first rank only
        return None
    return json.loads(json.dumps({"results": results["results"], "samples": results["samples"]},
                                 default=handle_non_serializable))


def _numbers(value):
    if isinstance(value, list):
        return [number for item in value for number in _numbers(item)]
    return [value] if isinstance(value, float) else []


@pytest.mark.parametrize("world, tensor_parallel", [(1, 1), (2, 2), (2, 1)], ids=["tp1", "tp2", "dp2"])
def test_harness_equals_lm_evals_hf_model(harness, world, tensor_parallel):
    output = harness["root"] / f"results-{world}-{tensor_parallel}.json"
    results = run_distributed(world, _evaluate, [
        "--load", harness["hf"], "--tasks", ",".join(TASKS), "--include-path", harness["tasks"], "--batch-size", "3",
        "--model-parallel-size", str(tensor_parallel), "--log-samples", "--output-path", str(output)])[0]
    reference = harness["reference"]
    assert json.loads(output.read_text(encoding="utf-8"))["results"].keys() == reference["results"].keys()
    for task in TASKS:
        ours, theirs = results["results"][task], reference["results"][task]
        metrics = [key for key in theirs if "," in key and "stderr" not in key]
        assert len(metrics) >= 1
        for key in metrics:
            assert math.isclose(ours[key], theirs[key], rel_tol=1e-4), (task, key, ours[key], theirs[key])
        our_samples = sorted(results["samples"][task], key=lambda s: s["doc_id"])
        their_samples = sorted(reference["samples"][task], key=lambda s: s["doc_id"])
        assert len(our_samples) == len(their_samples) > 0
        for ours_one, theirs_one in zip(our_samples, their_samples):
            assert ours_one["arguments"] == theirs_one["arguments"]
            our_values, their_values = _numbers(ours_one["resps"]), _numbers(theirs_one["resps"])
            assert len(our_values) == len(their_values)
            assert all(math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-4) for a, b in zip(our_values, their_values))
            if task == "generate_local":
                assert ours_one["resps"] == theirs_one["resps"]
    generated = [sample["resps"][0][0] for sample in reference["samples"]["generate_local"]]
    assert len(set(generated)) > 1 and all(generated), generated
    choices = reference["results"]["choice_local"]["acc,none"]
    assert 0 < choices < 1, "a test of accuracy needs both right and wrong answers"
