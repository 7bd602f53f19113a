"""The Hugging Face way in (hugging_face.py): a transformers GPT-Neo folder starts training at transformers'
loss, the llm-pytorch guide's command line runs as written from a local Hugging Face cache (trains, saves,
resumes, logs), and what is missing or means nothing here is one line."""

import json
import os
import subprocess
import sys

import pytest
import torch

from distributed import run_distributed
from gpt2_runs import expect_error, wrapped_steps
from launches import REPO, dry_run

SNAPSHOT = "0123456789abcdef0123456789abcdef01234567"


def _tiny_gpt_neo():
    from transformers import GPTNeoConfig, GPTNeoForCausalLM
    torch.manual_seed(0)
    return GPTNeoForCausalLM(GPTNeoConfig(vocab_size=50257, max_position_embeddings=64, hidden_size=32, num_layers=2,
                                          num_heads=4, attention_types=[[["global", "local"], 1]], window_size=8,
                                          initializer_range=0.3)).eval()  # a loss far from log(vocabulary)


def _cached(hub, kind, name):
    """A snapshot folder of the Hugging Face cache layout (what `hf download` fills), committed as main."""
    root = hub / f"{kind}--{name.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(SNAPSHOT)
    snapshot = root / "snapshots" / SNAPSHOT
    snapshot.mkdir(parents=True)
    return snapshot


@pytest.fixture(scope="module")
def hub(tmp_path_factory, sample_texts):
    """A local Hugging Face cache holding EleutherAI/gpt-neo-125m (a tiny model of that family under its name)
    and wikitext's wikitext-2-raw-v1 (the bundled corpus as its parquet files, its README's configs)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    hub = tmp_path_factory.mktemp("hf") / "hub"
    _tiny_gpt_neo().save_pretrained(_cached(hub, "models", "EleutherAI/gpt-neo-125m"))
    data = _cached(hub, "datasets", "wikitext")
    (data / "wikitext-2-raw-v1").mkdir()
    for split, texts in (("train", sample_texts[:400]), ("validation", sample_texts[400:440])):
        pq.write_table(pa.table({"text": texts}), data / "wikitext-2-raw-v1" / f"{split}-00000-of-00001.parquet")
    (data / "README.md").write_text("---\nconfigs:\n- config_name: wikitext-2-raw-v1\n  data_files:\n"
                                    "  - split: train\n    path: wikitext-2-raw-v1/train-*\n"
                                    "  - split: validation\n    path: wikitext-2-raw-v1/validation-*\n---\n")
    return hub


def _first_batch_and_loss(argv):
    """(inputs, labels) of the first micro-batch and the first iteration's logged loss."""
    import pretrain_gpt2
    seen = []

    def keep(get_batch):
        def kept(data_iterator, args):
            batch = get_batch(data_iterator, args)
            seen.append((batch[0][0].clone(), batch[0][1][0].clone()))
            return batch
        return kept
    with wrapped_steps(get_batch=keep):
        history = pretrain_gpt2.main(argv)
    return seen[0], history[1]["lm loss"]


def test_a_gpt_neo_folder_starts_training_at_transformers_loss(tmp_path, sample_texts):
    """--model_name_or_path FOLDER: the first iteration's loss (before any step) is transformers' loss of
    the same batch to 1e-4, on texts from --train_file (txt, one text a line)."""
    model = _tiny_gpt_neo()
    model.save_pretrained(tmp_path / "neo")
    (tmp_path / "train.txt").write_text("\n".join(text.replace("\n", " ") for text in sample_texts[:200]))
    argv = ["--model_name_or_path", str(tmp_path / "neo"), "--train_file", str(tmp_path / "train.txt"),
            "--block_size", "32", "--per_device_train_batch_size", "2", "--max_train_steps", "1", "--log-interval", "1",
            "--data-cache-dir", str(tmp_path / "cache"), "--num-workers", "0", "--eval-iters", "0"]
    (((inputs, labels), ours),) = run_distributed(1, _first_batch_and_loss, argv)
    with torch.no_grad():
        logits = model(inputs).logits
    theirs = float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1)))
    assert inputs.shape == (2, 32) and theirs > 11.5, theirs  # fresh weights would start near log(50257) = 10.8
    assert abs(ours - theirs) <= 1e-4 * theirs, (ours, theirs)
