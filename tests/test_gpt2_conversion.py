"""GPT-2 <-> transformers: the same logits at TP=1 and TP=2, exact round trips, a trained checkpoint out and back."""

import os
import subprocess
import sys

import pytest
import torch

import mpu
from checkpointing import read_checkpoint
from distributed import assert_rel_close, run_distributed
from gpt2_runs import train, train_argv
from model import GPT2Model
from model.gpt2_conversion import gpt2_from_hf, hf_from_gpt2
from model.tensor_parallel_state import merge_states, split_state

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOCAB, PADDED, HIDDEN, LAYERS, HEADS = 1000, 1024, 64, 2, 4


def _hf_model():
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(config).eval()


def _ours(state, layers, hidden, heads, padded, positions):
    model = GPT2Model(num_layers=layers, vocab_size=padded, hidden_size=hidden, num_attention_heads=heads,
                      max_sequence_length=positions, embedding_dropout=0.0, attention_dropout=0.0, hidden_dropout=0.0,
                      parallel_output=False)
    model.load_state_dict(split_state(state, mpu.get_model_parallel_world_size())[mpu.get_model_parallel_rank()])
    return model.eval()


def _logits_body(tensor_parallel):
    mpu.initialize_model_parallel(tensor_parallel)
    reference = _hf_model()
    tokens = torch.randint(0, VOCAB, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference(input_ids=tokens).logits
        logits = _ours(gpt2_from_hf(reference.state_dict(), LAYERS, PADDED), LAYERS, HIDDEN, HEADS, PADDED, 64)(tokens)
    assert_rel_close(logits[..., :VOCAB], expected, what="logits")


@pytest.mark.parametrize("tensor_parallel", [1, 2])
def test_transformers_gpt2_gives_the_same_logits(tensor_parallel):
    run_distributed(tensor_parallel, _logits_body, tensor_parallel)


@pytest.mark.parametrize("tensor_parallel", [1, 2, 4])
def test_round_trip_reproduces_the_state_dict(tensor_parallel):
    original = _hf_model().state_dict()
    back = hf_from_gpt2(merge_states(split_state(gpt2_from_hf(original, LAYERS, PADDED), tensor_parallel)), LAYERS,
                        VOCAB)
    assert back.keys() == original.keys()
    assert all(torch.equal(back[k], original[k]) for k in original)


def _checkpoint_logits(save, tokens):
    mpu.initialize_model_parallel(1)
    state, args, _ = read_checkpoint(save)
    model = _ours(state, args["num_layers"], args["hidden_size"], args["num_attention_heads"],
                  args["padded_vocab_size"], args["max_position_embeddings"])
    with torch.no_grad():
        return model(tokens)


def _convert(*flags):
    result = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "convert_checkpoint.py"), *flags],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_trained_checkpoint_to_transformers_and_back(tmp_path, gpt2_data_prefix, monkeypatch):
    from transformers import GPT2LMHeadModel, GPT2TokenizerFast
    save = str(tmp_path / "gpt2")
    run_distributed(2, train, train_argv(gpt2_data_prefix, "--model-parallel-size", "2", "--save", save,
                                         "--train-iters", "3", tokenizer="GPT2BPETokenizer"))
    hf_dir = str(tmp_path / "hf")
    _convert("--load", save, "--to-hf", hf_dir)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hf = GPT2LMHeadModel.from_pretrained(hf_dir).eval()
    tokenizer = GPT2TokenizerFast.from_pretrained(hf_dir)
    tokens = torch.tensor([tokenizer.encode("The Jargon File is a glossary of hacker slang.")])
    with torch.no_grad():
        expected = hf(input_ids=tokens).logits
    (ours,) = run_distributed(1, _checkpoint_logits, save, tokens)
    assert_rel_close(ours[..., :50257], expected, what="logits of the trained checkpoint")
    back = str(tmp_path / "back")
    _convert("--from-hf", hf_dir, "--save", back, "--model-parallel-size", "2")
    original, _, _ = read_checkpoint(save)
    converted, args, _ = read_checkpoint(back)
    assert args["model_parallel_size"] == 2 and args["tokenizer_type"] == "GPT2BPETokenizer"
    assert converted.keys() == original.keys()
    words = "word_embeddings.weight"  # rows past GPT-2's 50257 are padding: transformers has none of them
    assert torch.equal(converted[words][:50257], original[words][:50257]) and not converted[words][50257:].any()
    assert all(torch.equal(converted[k], original[k]) for k in original if k != words)
