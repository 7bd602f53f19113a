"""BERT on the shared loop: the same losses on every layout as one process with the masked-LM head on
every position (the head now runs on the masked positions only), both losses fall, and a trained checkpoint
converts to a transformers BertForPreTraining that gives the same logits."""

import argparse
import os
import subprocess
import sys

import pytest
import torch

from distributed import run_distributed
from gpt2_runs import wrapped_steps

pytestmark = pytest.mark.distributed  # multi-rank training runs: left out of `pytest -m "not distributed"`

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ITERS = 20


def _argv(data_prefix, vocab_file, *extra, batch_size=4):
    return ["--model-size", "tiny", "--seq-length", "64", "--batch-size", str(batch_size), "--train-iters", str(ITERS),
            "--log-interval", "1", "--eval-iters", "0", "--attention-dropout", "0", "--hidden-dropout", "0",
            "--lr", "1e-3", "--warmup", "0.1", "--max-preds-per-seq", "10", "--data-path", data_prefix,
            "--data-cache-dir", os.path.dirname(data_prefix), "--tokenizer-type", "BertWordPieceLowerCase",
            "--vocab-file", vocab_file, "--num-workers", "0", *extra]


def _train(argv, full_head=False):
    import pretrain_bert
    steps = pretrain_bert.STEPS
    if full_head:
        pretrain_bert.STEPS = steps._replace(forward_step=pretrain_bert.full_head_forward_step)
    try:
        history = pretrain_bert.main(argv)
    finally:
        pretrain_bert.STEPS = steps
    return [(history[i]["lm loss"], history[i]["nsp loss"]) for i in sorted(history)]


@pytest.fixture(scope="module")
def reference(bert_small_prefix, bert_small_vocab_file):
    """One process, batch 8, the head on every position. Samples vary in length (--short-seq-prob 0.1)
    and padding, and so in masked positions."""
    (losses,) = run_distributed(1, _train, _argv(bert_small_prefix, bert_small_vocab_file, batch_size=8), True)
    return losses


LAYOUTS = {  # the masked-LM loss is a mean over the global batch's masked positions, whatever the layout
    "1 process, micro batch 8": (1, [], 8),
    "2 ranks ZeRO-2, micro batch 4": (2, ["--zero-stage", "2"], 4),
    "1 rank, micro batch 4 x accumulation 2": (1, ["--gradient-accumulation-steps", "2"], 4),
    "TP=2": (2, ["--model-parallel-size", "2"], 8),
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_losses_agree_across_layouts(layout, reference, bert_small_prefix, bert_small_vocab_file):
    world_size, extra, batch_size = LAYOUTS[layout]
    argv = _argv(bert_small_prefix, bert_small_vocab_file, *extra, batch_size=batch_size)
    for losses in run_distributed(world_size, _train, argv):
        for i, ((lm, nsp), (lm_ref, nsp_ref)) in enumerate(zip(losses, reference), start=1):
            assert abs(lm - lm_ref) <= 1e-4 * lm_ref, f"iteration {i}: lm loss {lm} != {lm_ref}"
            assert abs(nsp - nsp_ref) <= 1e-4 * nsp_ref, f"iteration {i}: nsp loss {nsp} != {nsp_ref}"


def _mean(values):
    return sum(values) / len(values)


@pytest.mark.parametrize("tokenizer", ["WordPiece", "SentencePiece"])
def test_a_short_run_lowers_the_masked_lm_loss(tmp_path, tokenizer, bert_small_prefix, bert_small_vocab_file):
    """80 iterations of a tiny BERT on the bundled corpus. (The next-sentence loss stays at ln 2 at this
    scale, here and at 4 layers x 256 for 300 iterations: see test_binary_head_learns.)"""
    if tokenizer == "WordPiece":
        argv = _argv(bert_small_prefix, bert_small_vocab_file)
    else:  # the default path: a SentencePiece model trained on first use from the bundled corpus
        argv = ["--model-size", "tiny", "--seq-length", "64", "--batch-size", "4", "--log-interval", "1",
                "--eval-iters", "0", "--lr", "1e-3", "--warmup", "0.1", "--vocab-size", "2000",
                "--data-cache-dir", str(tmp_path)]
    (losses,) = run_distributed(1, _train, argv + ["--train-iters", "80", "--seed", "3"])
    lm, nsp = [loss[0] for loss in losses], [loss[1] for loss in losses]
    assert _mean(lm[-10:]) < _mean(lm[:10]) - 0.5, f"lm loss: {lm}"
    assert all(0.0 < value < 2.0 for value in nsp), f"nsp loss: {nsp}"
    if tokenizer == "SentencePiece":
        assert os.path.isfile(tmp_path / "sample_spm_2000.model")


def _binary_head_body():
    """Whether segment B's tokens come from another id range: the [CLS] -> pooler -> binary head path
    learns it in a few dozen steps through the real forward_step and loss."""
    import mpu
    import pretrain_bert
    from model import BertModel
    mpu.initialize_model_parallel(1)
    mpu.model_parallel_cuda_manual_seed(0)
    torch.manual_seed(0)
    model = BertModel(2, 512, 64, 2, 64, embedding_dropout=0.0, attention_dropout=0.0, hidden_dropout=0.0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)

    def batches():
        while True:
            label = torch.randint(0, 2, (32,), generator=generator)
            a = torch.randint(100, 200, (32, 20), generator=generator)
            b = torch.where(label[:, None] == 1, torch.randint(300, 400, (32, 20), generator=generator),
                            torch.randint(100, 200, (32, 20), generator=generator))
            yield {"text": torch.cat([a, b], 1), "types": (torch.arange(40) >= 20).long().expand(32, 40).clone(),
                   "labels": torch.full((32, 40), -1), "loss_mask": torch.zeros(32, 40, dtype=torch.long),
                   "padding_mask": torch.ones(32, 40, dtype=torch.long), "is_random": label,
                   "lm_positions": torch.zeros(32, 6, dtype=torch.long)}
    data, args = batches(), argparse.Namespace()
    nsp = []
    for _ in range(80):
        loss, values = pretrain_bert.forward_step(next(data), model, args, torch.tensor(1.0))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        nsp.append(values["nsp loss"])
    return nsp


def test_binary_head_learns():
    (nsp,) = run_distributed(1, _binary_head_body)
    assert nsp[0] > 0.5 and _mean(nsp[-10:]) < 0.05, nsp


def _logits_of_checkpoint(argv, tokens, types, padding):
    """Our model's gathered masked-LM and binary logits after loading a checkpoint (--finetune, 0 steps)."""
    import pretrain_bert
    captured = {}

    def capture(batch, model, args, loss_tokens):
        model.eval()
        with torch.no_grad():
            lm, binary = model(tokens, types, padding)
        import mpu
        captured["lm"], captured["binary"] = mpu.gather_from_model_parallel_region(lm), binary
        raise SystemExit(0)
    with wrapped_steps("pretrain_bert", forward_step=lambda original: capture), pytest.raises(SystemExit):
        pretrain_bert.main(argv)
    return captured["lm"], captured["binary"]


def test_trained_checkpoint_converts_to_transformers(tmp_path, bert_sentence_prefix, bert_vocab_file, monkeypatch):
    from transformers import BertForPreTraining
    save = str(tmp_path / "bert")
    run_distributed(2, _train, _argv(bert_sentence_prefix, bert_vocab_file, "--model-parallel-size", "2",
                                     "--save", save, "--train-iters", "3"))
    hf_dir = str(tmp_path / "hf")
    result = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "convert_checkpoint.py"), "--load", save,
                             "--to-hf", hf_dir], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert os.path.isfile(os.path.join(hf_dir, "vocab.txt"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hf = BertForPreTraining.from_pretrained(hf_dir).eval()
    generator = torch.Generator().manual_seed(5)
    tokens = torch.randint(1000, 30000, (2, 16), generator=generator)
    types = (torch.arange(16) >= 8).long().expand(2, 16).clone()
    padding = torch.ones(2, 16, dtype=torch.long)
    padding[1, 12:] = 0
    with torch.no_grad():
        expected = hf(input_ids=tokens, token_type_ids=types, attention_mask=padding)
    lm, binary = run_distributed(2, _logits_of_checkpoint, _argv(bert_sentence_prefix, bert_vocab_file,
                                                                 "--model-parallel-size", "2", "--load", save,
                                                                 "--finetune"), tokens, types, padding)[0]
    from distributed import assert_rel_close
    assert_rel_close(lm[..., :30522], expected.prediction_logits, what="masked-LM logits")
    assert_rel_close(binary, expected.seq_relationship_logits, what="binary logits")
