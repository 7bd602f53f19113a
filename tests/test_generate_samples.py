"""generate_samples.py against transformers: greedy generation from real prompts gives transformers'
tokens at TP=1 and TP=2; the key-value cache changes nothing; the sampling filters by hand."""

import json
import os
import subprocess
import sys

import pytest
import torch

import mpu
from distributed import assert_rel_close, run_distributed
from initialize import UsageError
from model.generation import filter_logits

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NEW_TOKENS = 32


@pytest.fixture(scope="module")
def converted(tmp_path_factory, sample_texts):
    """A random transformers GPT-2 (init std 0.1, so greedy decoding does not just repeat one token) with
    GPT-2's vocabulary, converted here; prompts from the real bundled text and an empty one."""
    from transformers import GPT2Config, GPT2LMHeadModel
    root = tmp_path_factory.mktemp("generate")
    hf_dir, save = str(root / "hf"), str(root / "ckpt")
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_positions=128, n_embd=64, n_layer=2, n_head=4, initializer_range=0.1)).save_pretrained(hf_dir)
    subprocess.run([sys.executable, os.path.join(REPO, "scripts", "convert_checkpoint.py"), "--from-hf", hf_dir,
                    "--save", save], check=True, capture_output=True)
    prompts = [" ".join(text.split()[:12]) for text in sample_texts[:3]] + [""]
    prompt_file = root / "prompts.txt"
    prompt_file.write_text("".join(p + "\n" for p in prompts), encoding="utf-8")
    return {"hf": hf_dir, "save": save, "prompts": prompts, "prompt_file": str(prompt_file), "root": root}


def _generate(argv):
    import generate_samples
    return generate_samples.main(argv)


def _transformers_greedy(hf_dir, prompts):
    from transformers import GPT2LMHeadModel

    from data_utils.tokenization import make_tokenizer
    tokenizer = make_tokenizer("GPT2BPETokenizer")
    model = GPT2LMHeadModel.from_pretrained(hf_dir, local_files_only=True).eval()
    generated = []
    for prompt in prompts:
        ids = torch.tensor([tokenizer.tokenize(prompt) if prompt else [tokenizer.eod]])
        out = model.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=tokenizer.eod,
                             pad_token_id=tokenizer.eod)[0, ids.size(1):].tolist()
        generated.append(out[:out.index(tokenizer.eod)] if tokenizer.eod in out else out)
    return generated


@pytest.mark.parametrize("tensor_parallel", [1, 2])
def test_greedy_generation_gives_transformers_tokens(converted, tensor_parallel):
    output = converted["root"] / f"greedy-tp{tensor_parallel}.jsonl"
    samples = run_distributed(tensor_parallel, _generate, [
        "--load", converted["save"], "--greedy", "--out-seq-length", str(NEW_TOKENS), "--model-parallel-size",
        str(tensor_parallel), "--sample-input-file", converted["prompt_file"], "--sample-output-file", str(output)])[0]
    expected = _transformers_greedy(converted["hf"], converted["prompts"])
    assert [s["tokens"] for s in samples] == expected
    assert len({tuple(tokens) for tokens in expected}) == len(expected) and all(len(set(t)) > 4 for t in expected)
    written = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert written == samples and [s["prompt"] for s in written] == converted["prompts"]


def _with_and_without_cache(argv):
    import generate_samples
    cached = generate_samples.main(argv)
    mpu.destroy_model_parallel()
    return cached, generate_samples.main(argv + ["--no-kv-cache"])


@pytest.mark.parametrize("sampling", [["--greedy"], ["--top_k", "50", "--top_p", "0.9", "--temperature", "0.8"]],
                         ids=["greedy", "sampled"])
def test_the_cache_changes_no_token(converted, sampling):
    argv = ["--load", converted["save"], "--out-seq-length", str(NEW_TOKENS), "--num-samples", "3",
            "--sample-input-file", converted["prompt_file"], "--sample-output-file", str(converted["root"] / "x.jsonl"),
            *sampling]
    cached, recomputed = run_distributed(1, _with_and_without_cache, argv)[0]
    assert len(cached) == 3 * len(converted["prompts"])
    assert [s["tokens"] for s in cached] == [s["tokens"] for s in recomputed]
    if "--greedy" not in sampling:  # three different samples of a prompt
        assert len({tuple(s["tokens"]) for s in cached[:3]}) == 3


def _cache_logits_body():
    """Logits of a prompt then three single tokens through the cache equal one pass over all of them."""
    from model import GPT2Model, KVCache
    mpu.initialize_model_parallel(1)
    torch.manual_seed(0)
    model = GPT2Model(2, 128, 32, 4, 16, embedding_dropout=0, attention_dropout=0, hidden_dropout=0,
                      parallel_output=False).eval()
    tokens = torch.randint(0, 128, (2, 9))
    cache = KVCache(16)
    with torch.no_grad():
        full = model(tokens)
        pieces = [model(tokens[:, :4], cache=cache), model(tokens[:, 4:6], cache=cache)]
        pieces += [model(tokens[:, i:i + 1], cache=cache) for i in range(6, 9)]
    return full, torch.cat(pieces, dim=1), cache.length


def test_cache_logits_equal_the_full_pass():
    full, cached, length = run_distributed(1, _cache_logits_body)[0]
    assert length == 9
    assert_rel_close(cached, full, what="logits through the cache")


def test_filters_by_hand():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0]])  # probabilities 0.644, 0.237, 0.087, 0.032
    inf = float("-inf")
    assert filter_logits(logits, top_k=2).tolist() == [[3.0, 2.0, inf, inf]]
    assert filter_logits(logits, top_p=0.7).tolist() == [[3.0, 2.0, inf, inf]]
    assert filter_logits(logits, top_p=0.5).tolist() == [[3.0, inf, inf, inf]]
    assert filter_logits(logits, top_p=0.95).tolist() == [[3.0, 2.0, 1.0, inf]]
    assert filter_logits(torch.tensor([[0.0, 5.0, 1.0]]), top_k=1, top_p=0.9).tolist() == [[inf, 5.0, inf]]


def _errors(save):
    import generate_samples
    from arguments import add_generation_args, get_args
    messages = []
    for flags in (["--greedy", "--top_k", "5"], ["--temperature", "0"], ["--model-parallel-size", "2"]):
        try:
            generate_samples.generate_samples(get_args(["--load", save, *flags], extra_args=add_generation_args))
        except UsageError as error:
            messages.append(str(error))
        mpu.destroy_model_parallel()
    return messages


def test_inconsistent_flags_are_one_clear_error(converted):
    messages = run_distributed(1, _errors, converted["save"])[0]
    assert len(messages) == 3
    assert "--greedy" in messages[0] and "--temperature 0" in messages[1] and "not 1" in messages[2]


def test_interactive_prompts_from_the_terminal(converted):
    """Prompts typed at the terminal (here a pipe), an empty one unconditional; Ctrl-D (end of input) stops."""
    result = subprocess.run([sys.executable, os.path.join(REPO, "generate_samples.py"), "--load", converted["save"],
                             "--greedy", "--out-seq-length", "8"], input="The hacker ethic\n\n", capture_output=True,
                            text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    expected = _transformers_greedy(converted["hf"], ["The hacker ethic", ""])
    from data_utils.tokenization import make_tokenizer
    tokenizer = make_tokenizer("GPT2BPETokenizer")
    from generate_samples import SAMPLE_SEPARATOR
    samples = result.stdout.split(SAMPLE_SEPARATOR + "\n")
    assert len(samples) == 3 and samples[2] == "", "each sample ends with a separator line"
    assert samples[0].endswith("The hacker ethic" + tokenizer.detokenize_prefix(expected[0][:8]) + "\n")
    assert samples[1].endswith(tokenizer.detokenize_prefix(expected[1][:8]) + "\n")
