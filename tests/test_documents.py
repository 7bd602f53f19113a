"""Documents packed into one sample, as Megatron-LM keeps them apart: --reset-attention-mask and
--reset-position-ids give each document the logits it has alone; --eod-mask-loss leaves out only the
prediction of a new document's first token, so a model still learns to end a document."""

import json
import os

import pytest
import torch

from distributed import assert_rel_close, run_distributed
from gpt2_runs import train, train_argv

EOD = 50256
DOCUMENTS = ["The cat sat on the mat.", "A dog ran in the park.", "Birds fly over the sea.", "Fish swim in the lake."]


def _each_document_alone_body(tensor_parallel):
    import mpu
    from model import GPT2Model
    from model.documents import document_attention_mask, document_ids, document_position_ids
    mpu.initialize_model_parallel(tensor_parallel)
    mpu.model_parallel_cuda_manual_seed(0)
    model = GPT2Model(2, 50304, 64, 4, 64, embedding_dropout=0.0, attention_dropout=0.0, hidden_dropout=0.0,
                      parallel_output=False, seed=7).eval()
    generator = torch.Generator().manual_seed(3)
    pieces = [torch.randint(0, EOD, (n,), generator=generator) for n in (9, 14, 6)]
    documents = [torch.cat([p, torch.tensor([EOD])]) for p in pieces[:2]] + [pieces[2]]  # the last one is cut off
    packed = torch.cat(documents)[None]
    ids = document_ids(packed, EOD)
    with torch.no_grad():
        logits = model(packed, position_ids=document_position_ids(ids), attention_mask=document_attention_mask(ids))
        alone = torch.cat([model(document[None]) for document in documents], dim=1)
        plain = model(packed)
    return logits, alone, plain, document_position_ids(ids)


@pytest.mark.parametrize("tensor_parallel", [1, 2])
def test_reset_attention_mask_gives_each_document_its_own_logits(tensor_parallel):
    logits, alone, plain, positions = run_distributed(tensor_parallel, _each_document_alone_body, tensor_parallel)[0]
    assert positions.tolist() == [list(range(10)) + list(range(15)) + list(range(6))]
    assert_rel_close(logits, alone, rtol=1e-5, what="packed documents vs each alone")
    assert not torch.allclose(plain[:, 10:], alone[:, 10:], atol=1e-3), "without the flags documents do interact"


@pytest.mark.distributed
def test_reset_flags_train_alike_at_two_tensor_parallel_ranks(data_prefix):
    flags = ("--reset-position-ids", "--reset-attention-mask", "--train-iters", "5")
    (single,) = run_distributed(1, train, train_argv(data_prefix, *flags))
    double = run_distributed(2, train, train_argv(data_prefix, *flags, "--model-parallel-size", "2"))
    (plain,) = run_distributed(1, train, train_argv(data_prefix, "--train-iters", "5"))
    for losses in double:
        assert all(abs(a - b) <= 1e-4 * b for a, b in zip(losses, single)), (losses, single)
    assert single[0] != plain[0], "the first batch packs several documents: keeping them apart changes its loss"


def _train_then_generate(train_argv_, generate_argv):
    import generate_samples
    import mpu
    train(train_argv_)
    mpu.destroy_model_parallel()
    return generate_samples.main(generate_argv)


@pytest.mark.distributed
def test_eod_mask_loss_still_learns_to_end_a_document(tmp_path):
    """Short documents repeated many times: greedy continuations stop at end-of-document."""
    corpus, prompts, save = tmp_path / "short.jsonl", tmp_path / "prompts.txt", str(tmp_path / "ckpt")
    corpus.write_text("".join(json.dumps({"text": DOCUMENTS[i % 4]}) + "\n" for i in range(400)))
    prompts.write_text("".join(" ".join(d.split()[:2]) + "\n" for d in DOCUMENTS))
    argv = train_argv(None, "--train-data", str(corpus), "--data-cache-dir", str(tmp_path / "cache"),
                      "--eod-mask-loss", "--train-iters", "150", "--lr", "3e-3", "--save", save, "--log-interval", "50")
    generate = ["--load", save, "--greedy", "--out-seq-length", "24", "--sample-input-file", str(prompts)]
    (samples,) = run_distributed(1, _train_then_generate, argv, generate)
    for sample, document in zip(samples, DOCUMENTS):
        assert sample["prompt"] + sample["text"] == document and len(sample["tokens"]) < 24, sample
    assert os.path.isdir(save)
