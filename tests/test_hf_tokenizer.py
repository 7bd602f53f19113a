"""A GPT-NeoX / Pythia-style folder ships only tokenizer.json: it converts, evaluates and generates with its
own ids (HFTokenizer, GPT-NeoX's --tokenizer-type), never GPT-2's. The folder here holds a byte-level BPE
trained with `tokenizers` on the bundled corpus (1000 tokens, not GPT-2's 50257) and a random GPTNeoX. And every
family's --to-hf writes the tokenizer's own special ids."""

import json
import os
import subprocess
import sys

import pytest
import torch

from distributed import run_distributed
from tasks.wikitext import evaluation_windows, wikitext_detokenize

pytestmark = pytest.mark.distributed  # converts and evaluates on ranks: left out of `pytest -m "not distributed"`

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEQ, NEW_TOKENS = 64, 8


def _convert(*flags):
    return subprocess.run([sys.executable, os.path.join(REPO, "scripts", "convert_checkpoint.py"), *flags],
                          capture_output=True, text=True)


@pytest.fixture(scope="module")
def neox(tmp_path_factory, sample_texts):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM
    root = tmp_path_factory.mktemp("neox")
    folder = root / "hf"
    folder.mkdir()
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(sample_texts, trainers.BpeTrainer(
        vocab_size=1000, special_tokens=["<|padding|>", "<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer.save(str(folder / "tokenizer.json"))
    torch.manual_seed(0)
    GPTNeoXForCausalLM(GPTNeoXConfig(
        vocab_size=tokenizer.get_vocab_size(), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=128, max_position_embeddings=SEQ, initializer_range=0.1, bos_token_id=0, eos_token_id=2,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25},
    )).save_pretrained(folder)
    wikitext = root / "wiki.test.tokens"
    wikitext.write_text("".join(f" {text[:300]} \n \n" for text in sample_texts[:4]), encoding="utf-8")
    prompts = root / "prompts.txt"
    prompts.write_text("".join(" ".join(text.split()[:10]) + "\n" for text in sample_texts[:2]), encoding="utf-8")
    return {"root": root, "hf": str(folder), "wikitext": str(wikitext), "prompts": str(prompts),
            "eod": tokenizer.token_to_id("<|endoftext|>")}


def _auto(folder, monkeypatch):
    from transformers import AutoTokenizer
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return AutoTokenizer.from_pretrained(folder)


def _evaluate(argv):
    import importlib.util
    spec = importlib.util.spec_from_file_location("run_gpt2_eval", os.path.join(REPO, "scripts", "run_gpt2_eval.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv)


def _generate(argv):
    import generate_samples
    return generate_samples.main(argv)


def test_a_tokenizer_json_folder_evaluates_with_its_own_ids(neox, monkeypatch):
    """run_gpt2_eval.py --model-path on the folder gives transformers' loss on the text as AutoTokenizer
    encodes it."""
    from transformers import GPTNeoXForCausalLM
    auto = _auto(neox["hf"], monkeypatch)
    with open(neox["wikitext"], encoding="utf-8") as f:
        tokens = auto.encode(wikitext_detokenize(f.read()), add_special_tokens=False)
    model = GPTNeoXForCausalLM.from_pretrained(neox["hf"], local_files_only=True).eval()
    loss = 0.0
    with torch.no_grad():
        for inputs, targets, scored in evaluation_windows(tokens, SEQ):
            logits = model(input_ids=torch.tensor([inputs])).logits[0]
            picked = torch.tensor(scored)
            loss += torch.nn.functional.cross_entropy(logits[picked], torch.tensor(targets)[picked],
                                                      reduction="sum").item()
    (result,) = run_distributed(1, _evaluate, ["--model-path", neox["hf"], "--data-path", neox["wikitext"]])
    assert result["tokens"] == len(tokens)
    assert result["loss"] == pytest.approx(loss / (len(tokens) - 1), rel=1e-5)


def test_a_tokenizer_json_folder_converts_and_generates_both_ways(neox, monkeypatch):
    """--from-hf keeps the tokenizer (HFTokenizer); greedy generation from the checkpoint gives
    transformers' tokens; --to-hf writes it back, with the tokenizer's own special ids in config.json."""
    from transformers import GPTNeoXForCausalLM
    save, back = str(neox["root"] / "ckpt"), str(neox["root"] / "back")
    converted = _convert("--from-hf", neox["hf"], "--save", save)
    assert converted.returncode == 0, converted.stderr
    prompts = open(neox["prompts"], encoding="utf-8").read().splitlines()
    samples = run_distributed(1, _generate, ["--load", save, "--greedy", "--out-seq-length", str(NEW_TOKENS),
                                             "--sample-input-file", neox["prompts"]])[0]
    auto = _auto(neox["hf"], monkeypatch)
    model = GPTNeoXForCausalLM.from_pretrained(neox["hf"], local_files_only=True).eval()
    for prompt, sample in zip(prompts, samples):
        ids = torch.tensor([auto.encode(prompt, add_special_tokens=False)])
        out = model.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=neox["eod"],
                             pad_token_id=neox["eod"])[0, ids.size(1):].tolist()
        assert sample["tokens"] == (out[:out.index(neox["eod"])] if neox["eod"] in out else out)
    written = _convert("--load", save, "--to-hf", back)
    assert written.returncode == 0, written.stderr
    config = json.load(open(os.path.join(back, "config.json")))
    assert (config["bos_token_id"], config["eos_token_id"]) == (neox["eod"], neox["eod"])
    again = _auto(back, monkeypatch)
    for prompt in prompts:
        assert again.encode(prompt, add_special_tokens=False) == auto.encode(prompt, add_special_tokens=False)
    assert again.eos_token_id == neox["eod"]


def test_an_unreadable_or_missing_tokenizer_is_one_clear_error(neox, tmp_path):
    import shutil
    broken = tmp_path / "broken"
    shutil.copytree(neox["hf"], broken)
    (broken / "tokenizer.json").write_text('{"model": "not a tokenizer"}')
    result = _convert("--from-hf", str(broken), "--save", str(tmp_path / "a"))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "broken: its tokenizer cannot be read" in result.stderr and not os.path.exists(tmp_path / "a")
    os.remove(broken / "tokenizer.json")
    result = _convert("--from-hf", str(broken), "--save", str(tmp_path / "b"))
    assert "no tokenizer files" in result.stderr and "1000-token vocabulary is not GPT-2's" in result.stderr


FAMILIES = {"gpt2": [], "gpt_neo": ["--attention-types", "global local", "--attention-window", "8",
                                    "--no-attention-scaling", "--no-qkv-bias"],
            "gpt_neox": ["--position-embedding-type", "rotary", "--rotary-pct", "0.25", "--activation", "gelu",
                         "--parallel-residual", "--untie-embeddings"]}


@pytest.mark.parametrize("family", FAMILIES)
def test_to_hf_writes_the_tokenizers_special_ids_for_every_family(family, tmp_path, data_prefix):
    """A checkpoint trained on UTF-8 bytes (end-of-document 256): config.json says 256, not transformers'
    defaults for the family (50256 for GPT-2 and GPT-Neo, 0 and 2 for GPT-NeoX)."""
    from gpt2_runs import train, train_argv
    save, hf_dir = str(tmp_path / "ckpt"), str(tmp_path / "hf")
    run_distributed(1, train, train_argv(data_prefix, *FAMILIES[family], "--train-iters", "1", "--save", save))
    written = _convert("--load", save, "--to-hf", hf_dir)
    assert written.returncode == 0, written.stderr
    config = json.load(open(os.path.join(hf_dir, "config.json")))
    assert config["model_type"] == family
    assert (config["bos_token_id"], config["eos_token_id"]) == (256, 256)
