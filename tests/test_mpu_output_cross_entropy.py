"""vocab_parallel_output_cross_entropy (the output layer and its loss, chunk by chunk) against the
unfused computation in float64: the loss, the per-token losses and both gradients, at 1, 2 and 4
tensor-parallel ranks, with padded vocabulary rows whose logits are the largest, masked and unequally
weighted tokens, chunks that do not divide the tokens, and a token whose target probability is below
float32's range, with and without an output bias (BERT's). GPT2Model's loss through it equals torch's
cross-entropy on its logits."""

import pytest
import torch
import torch.nn.functional as F

import mpu
from distributed import assert_rel_close, run_distributed

BATCH, SEQ, HIDDEN, VOCAB = 4, 6, 16, 48


def _problem(vocab_size):
    generator = torch.Generator().manual_seed(21)
    hidden = torch.randn(BATCH, SEQ, HIDDEN, generator=generator)
    weight = torch.randn(VOCAB, HIDDEN, generator=generator)
    weight[vocab_size:] = 4.0 * hidden.mean(dim=(0, 1))  # padded rows with the largest logits: they take nothing
    target = torch.randint(0, vocab_size, (BATCH, SEQ), generator=generator)
    hidden[0, 0] = -12.0 * weight[target[0, 0]]  # its target's probability is far below float32's tiny
    loss_weights = torch.rand(BATCH, SEQ, generator=generator)
    loss_weights[1] = 0.0  # masked tokens
    bias = torch.randn(VOCAB, generator=generator)
    return hidden, weight, target, loss_weights, bias


def _reference(hidden, weight, target, loss_weights, vocab_size, bias):
    hidden, weight, bias = (tensor.double().requires_grad_() for tensor in (hidden, weight, bias))
    logits = F.linear(hidden, weight, bias)[..., :vocab_size]
    losses = F.cross_entropy(logits.reshape(-1, vocab_size), target.view(-1), reduction="none").view(BATCH, SEQ)
    total = (losses * loss_weights.double()).sum()
    (3.0 * total).backward()
    return total, losses, hidden.grad, weight.grad, bias.grad


def _fused_body(tensor_parallel, vocab_size, dtype, rtol, loss_scale=3.0, weight_scale=1.0, with_bias=False):
    mpu.initialize_model_parallel(tensor_parallel)
    rank, world = mpu.get_model_parallel_rank(), mpu.get_model_parallel_world_size()
    hidden, weight, target, loss_weights, bias = _problem(vocab_size)
    bias = bias if with_bias else torch.zeros_like(bias)
    loss_weights *= weight_scale
    total_ref, losses_ref, grad_hidden_ref, grad_weight_ref, grad_bias_ref = _reference(
        hidden, weight, target, loss_weights, vocab_size, bias)
    shard = torch.chunk(weight, world, dim=0)[rank].to(dtype).requires_grad_()
    bias_shard = torch.chunk(bias, world)[rank].to(dtype).requires_grad_() if with_bias else None
    inputs = hidden.to(dtype).requires_grad_()
    chunks_of_5 = 5 * shard.size(0)  # of the 24 tokens
    total, losses = mpu.vocab_parallel_output_cross_entropy(mpu.copy_to_model_parallel_region(inputs), shard,
                                                            target, loss_weights, vocab_size, chunks_of_5, bias_shard)
    assert not losses.requires_grad and losses.dtype == torch.float32
    (loss_scale * total).backward()
    grad_hidden, grad_weight = (tensor.grad.double() * (3.0 / loss_scale) for tensor in (inputs, shard))
    if with_bias:
        assert bias_shard.grad.dtype == dtype
        assert_rel_close(bias_shard.grad.double() * (3.0 / loss_scale), torch.chunk(grad_bias_ref, world)[rank],
                         rtol, what="bias grad")
    assert losses[0, 0] > 100 and torch.isfinite(losses).all(), "an underflowing probability keeps its true loss"
    assert_rel_close(total, total_ref, rtol, what="weighted loss")
    assert_rel_close(losses, losses_ref, rtol, what="per-token losses")
    assert_rel_close(grad_hidden, grad_hidden_ref, rtol, what="hidden grad")
    assert_rel_close(grad_weight, torch.chunk(grad_weight_ref, world, dim=0)[rank], rtol, what="weight grad")
    assert not shard.grad[max(vocab_size - rank * shard.size(0), 0):].any(), "padding rows get no gradient"
    with torch.no_grad():
        total_eval, losses_eval = mpu.vocab_parallel_output_cross_entropy(inputs, shard, target, loss_weights,
                                                                          vocab_size, chunks_of_5, bias_shard)
    assert not total_eval.requires_grad
    assert torch.equal(losses_eval, losses) and torch.equal(total_eval, total.detach())


@pytest.mark.parametrize("world_size, with_bias", [(1, False), (1, True), (2, True), (4, True)])
def test_matches_unfused_float64(world_size, with_bias):
    """30 real rows of 48: at 4 ranks (12 each) rank 2 holds some padding and rank 3 only padding."""
    run_distributed(world_size, _fused_body, world_size, 30, torch.float32, 1e-5, 3.0, 1.0, with_bias)


@pytest.mark.parametrize("world_size", [1, 2])
def test_bf16_within_bf16_rounding(world_size):
    run_distributed(world_size, _fused_body, world_size, VOCAB, torch.bfloat16, 2e-2, 3.0, 1.0,
                    world_size == 2)


def test_fp16_gradients_wait_for_the_loss_scale():
    """Loss weights of 1e-7 (a mean over ten million tokens) with a loss scale of 2^16: weighted before
    scaling, fp16 gradients would be mostly below fp16's range."""
    run_distributed(1, _fused_body, 1, VOCAB, torch.float16, 2e-2, 65536.0, 1e-7)


def _autocast_body():
    mpu.initialize_model_parallel(1)
    hidden, weight, target, loss_weights, _ = _problem(VOCAB)
    total_ref, losses_ref, grad_hidden_ref, grad_weight_ref, _ = _reference(hidden, weight, target, loss_weights,
                                                                            VOCAB, torch.zeros(VOCAB))
    full_precision, _ = mpu.vocab_parallel_output_cross_entropy(hidden, weight, target, loss_weights)
    hidden, weight = hidden.requires_grad_(), weight.requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        total, losses = mpu.vocab_parallel_output_cross_entropy(hidden, weight, target, loss_weights)
    (3.0 * total).backward()
    assert weight.grad.dtype == torch.float32
    assert_rel_close(total, total_ref, 2e-2, what="weighted loss")
    assert_rel_close(weight.grad, grad_weight_ref, 2e-2, what="weight grad")
    assert_rel_close(hidden.grad, grad_hidden_ref, 2e-2, what="hidden grad")
    assert abs(total.item() - full_precision.item()) > 1e-5 * abs(full_precision.item()), "ran in bf16, not fp32"


def test_autocast_runs_the_output_layer_in_its_dtype():
    run_distributed(1, _autocast_body)


def _gpt2_body():
    from model import GPT2Model
    mpu.initialize_model_parallel(1)
    model = GPT2Model(num_layers=2, vocab_size=VOCAB, hidden_size=HIDDEN, num_attention_heads=2,
                      max_sequence_length=SEQ, embedding_dropout=0.0, attention_dropout=0.0, hidden_dropout=0.0, seed=3,
                      text_vocab_size=40)
    tokens = torch.randint(0, 40, (BATCH, SEQ + 1), generator=torch.Generator().manual_seed(5))
    inputs, labels = tokens[:, :-1], tokens[:, 1:]
    loss_mask = (inputs != 7).long()
    model(inputs, labels=(labels, loss_mask, loss_mask.sum())).backward()
    fused = {name: parameter.grad.clone() for name, parameter in model.named_parameters()}
    model.zero_grad()
    losses = F.cross_entropy(model(inputs)[..., :40].transpose(1, 2), labels, reduction="none")
    ((losses * loss_mask).sum() / loss_mask.sum()).backward()
    for name, parameter in model.named_parameters():
        assert_rel_close(fused[name], parameter.grad, 1e-5, what=name)


def test_gpt2_loss_matches_cross_entropy_of_its_logits():
    """The tied word embeddings get the output layer's gradient and the embedding's, as unfused."""
    run_distributed(1, _gpt2_body)
