"""The vocabulary is padded (50257 -> 50304 rows); the padded rows of a converted model are zero, so
their logit is 0 while a published GPT-2's logits are large and negative. They must take no
probability: a transformers GPT-2 whose logits are about -100, converted and fine-tuned here, logs
transformers' loss on the same batch and generates transformers' greedy tokens."""

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from distributed import run_distributed
from gpt2_runs import train_argv, wrapped_steps

pytestmark = pytest.mark.distributed  # multi-rank training runs: left out of `pytest -m "not distributed"`

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPE = ("--num-layers", "2", "--hidden-size", "64", "--num-attention-heads", "2", "--max-position-embeddings", "64")


def _negative_logits_gpt2(hf_dir):
    """Random GPT-2 weights, then the final LayerNorm shrunk and shifted along u and every embedding
    row moved against u: every logit is about -100."""
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_positions=64, n_embd=64, n_layer=2, n_head=2, initializer_range=0.1))
    u = F.normalize(torch.randn(64), dim=0)
    with torch.no_grad():
        model.transformer.ln_f.weight.mul_(0.01)
        model.transformer.ln_f.bias.copy_(10.0 * u)
        model.transformer.wte.weight.sub_(10.0 * u)
    model.save_pretrained(hf_dir)
    return model.eval()


def _finetune_first_batch(argv):
    """pretrain_gpt2 for one iteration; (its lm loss, (inputs, labels) of the batch it trained on)."""
    import pretrain_gpt2
    seen = []

    def recording(get_batch):
        def recorded(data_iterator, args):
            batch = get_batch(data_iterator, args)
            inputs, (labels, _), _ = batch[0]
            seen.append((inputs, labels))
            return batch
        return recorded

    with wrapped_steps(get_batch=recording):
        history = pretrain_gpt2.main(argv)
    return history[1]["lm loss"], seen[0]


def _generate(argv):
    import generate_samples
    return generate_samples.main(argv)


def test_a_converted_gpt2_with_negative_logits_finetunes_and_generates(tmp_path, gpt2_data_prefix):
    hf_dir, save = str(tmp_path / "hf"), str(tmp_path / "ckpt")
    reference = _negative_logits_gpt2(hf_dir)
    converted = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "convert_checkpoint.py"), "--from-hf",
                                hf_dir, "--save", save], capture_output=True, text=True)
    assert converted.returncode == 0, converted.stderr
    argv = train_argv(gpt2_data_prefix, *SHAPE, "--load", save, "--finetune", "--train-iters", "1", batch_size=2,
                      tokenizer="GPT2BPETokenizer")
    loss, (inputs, labels) = run_distributed(1, _finetune_first_batch, argv)[0]
    with torch.no_grad():
        logits = reference(input_ids=inputs).logits
    assert logits.max() < -90, "every logit of the reference is about -100"
    expected = F.cross_entropy(logits.flatten(0, 1), labels.flatten()).item()
    assert abs(loss - expected) <= 1e-4 * expected, f"first lm loss {loss}, transformers' {expected}"

    prompt = tmp_path / "prompt.txt"
    prompt.write_text("The hacker ethic is\n", encoding="utf-8")
    ((sample,),) = run_distributed(1, _generate, ["--load", save, "--greedy", "--out-seq-length", "16",
                                                  "--sample-input-file", str(prompt)])
    from data_utils.tokenization import make_tokenizer
    ids = torch.tensor([make_tokenizer("GPT2BPETokenizer").tokenize("The hacker ethic is")])
    greedy = reference.generate(ids, max_new_tokens=16, do_sample=False, eos_token_id=50256,
                                pad_token_id=50256)[0, ids.size(1):].tolist()
    assert sample["tokens"] == (greedy[:greedy.index(50256)] if 50256 in greedy else greedy)
