"""The output layer and its cross-entropy in one pass over chunks of tokens (a fused linear
cross-entropy): the [tokens, vocabulary] logits are never held whole.

At GPT-2's 50k-word vocabulary the logits are the largest tensors of a step (fp32, 2k tokens: 412 MB;
8k tokens: 1.6 GB), and the unfused path writes and reads several of them (logits, their float copy,
the softmax, its gradient). Here each chunk's logits are computed, turned into the chunk's loss and,
when gradients are wanted, into the gradient of the chunk's logits, which is multiplied out at once
into the hidden states' and the output weight's gradients; then the chunk's memory is reused. The
matrix multiplies are the same three as unfused; what goes is the memory traffic (and, on a CPU, the
page faults of fresh 400 MB tensors).

Gradients are computed in the forward pass, for the weighted loss sum it returns (the weights are the
loss mask over the loss-bearing tokens, known before the forward), and the backward scales them by the
incoming gradient; so the backward needs neither the logits nor the output weight (under ZeRO-3 the
weight need not be gathered again). Vocabulary-parallel as mpu.vocab_parallel_cross_entropy: each
tensor-parallel rank holds a slice of the weight's rows, the maximum and the sums are all-reduced per
chunk, and the hidden states' gradient is this slice's share (copy_to_model_parallel_region, in front
of this, sums the shares in its backward).
"""

import torch

from .cross_entropy import (
    local_target,
    model_parallel_group_if_split,
    softmax_and_loss,
    subtract_one_hot,
    vocabulary_slice,
)

CHUNK_ELEMENTS = 1 << 25  # logits per chunk (128 MiB in fp32): large matrix multiplies, memory bounded


class _OutputCrossEntropy(torch.autograd.Function):

    @staticmethod
    def forward(ctx, hidden, weight, bias, target, loss_weights, vocab_size, with_gradients, chunk_elements):
        group, slice_size = model_parallel_group_if_split(), weight.size(0)
        vocab_start, real_columns = vocabulary_slice(slice_size, vocab_size)
        columns = local_target(target, vocab_start, slice_size)
        tokens = hidden.size(0)
        chunks = -(-tokens * slice_size // chunk_elements)
        chunk = -(-tokens // max(chunks, 1))  # equal chunks: a short last one would multiply slowly
        buffers = torch.empty(2, chunk, slice_size, dtype=torch.float32, device=hidden.device)
        losses = torch.empty(tokens, dtype=torch.float32, device=hidden.device)
        # gradients are kept in fp32 and unscaled until the backward brings the loss scale: in fp16 a
        # weighted gradient can be below its range before scaling. Rows are weighted relative to the
        # largest weight in the low-precision product; the largest weight is applied in fp32.
        grad_hidden = torch.empty(hidden.shape, dtype=torch.float32, device=hidden.device) if with_gradients else None
        grad_weight = None
        grad_bias = torch.zeros(slice_size, dtype=torch.float32, device=hidden.device) \
            if with_gradients and bias is not None else None
        scale = loss_weights.max().clamp(min=torch.finfo(torch.float32).tiny)
        for start in range(0, tokens, chunk):
            end = min(start + chunk, tokens)
            part, weights = hidden[start:end], loss_weights[start:end].unsqueeze(1)
            logits, probabilities = buffers[0, :end - start], buffers[1, :end - start]
            if hidden.dtype == torch.float32:
                torch.mm(part, weight.t(), out=logits)
            else:
                logits.copy_(part @ weight.t())
            if bias is not None:
                logits.add_(bias)
            if real_columns < slice_size:
                logits[:, real_columns:] = float("-inf")
            losses[start:end] = softmax_and_loss(logits, probabilities, columns[start:end], group)
            if not with_gradients:
                continue
            grad_logits = subtract_one_hot(probabilities, columns[start:end])  # unweighted
            if grad_bias is not None:
                grad_bias.addmv_(grad_logits.t(), weights.squeeze(1))
            grad_logits = grad_logits.to(hidden.dtype)
            # weighting rows of the [tokens, slice] gradient = weighting rows of the small operands
            torch.mul(grad_logits @ weight, weights, out=grad_hidden[start:end])
            weighted_part = part * (weights / scale).to(part.dtype)
            if grad_weight is None:
                grad_weight = torch.mm(grad_logits.t(), weighted_part).float()
            elif grad_logits.dtype == torch.float32:
                grad_weight.addmm_(grad_logits.t(), weighted_part)
            else:  # bf16/fp16 products summed in fp32 over the chunks
                grad_weight.add_(grad_logits.t() @ weighted_part)
        if with_gradients:
            ctx.save_for_backward(grad_hidden, grad_weight, grad_bias, scale)
            ctx.dtypes = hidden.dtype, weight.dtype, None if bias is None else bias.dtype
        ctx.mark_non_differentiable(losses)
        return (losses * loss_weights).sum(), losses

    @staticmethod
    def backward(ctx, grad_loss, _):
        grad_hidden, grad_weight, grad_bias, scale = ctx.saved_tensors
        hidden_dtype, weight_dtype, bias_dtype = ctx.dtypes
        return (grad_hidden.mul_(grad_loss).to(hidden_dtype), grad_weight.mul_(grad_loss * scale).to(weight_dtype),
                None if grad_bias is None else grad_bias.mul_(grad_loss).to(bias_dtype),
                None, None, None, None, None)


def vocab_parallel_output_cross_entropy(hidden, weight, target, loss_weights, vocab_size=None,
                                        chunk_elements=CHUNK_ELEMENTS, bias=None):
    """(sum over tokens of loss_weights x cross-entropy of hidden @ weight.T + bias against target, the
    per-token losses). hidden [..., h]: the output layer's input (through copy_to_model_parallel_region);
    weight: this rank's rows of the output layer [vocab / TP, h]; bias: None or this rank's slice of the
    output bias [vocab / TP] (BERT's; added in fp32); target, loss_weights: hidden's leading shape.
    vocab_size: the real vocabulary; rows from it up are padding and take no probability (None: all
    count). chunk_elements: logits made at a time (at most; chunks are equal). Under torch.autocast the
    output layer runs in autocast's dtype. The per-token losses (float32) carry no gradient. Gradients are computed in the forward pass only where autograd will want them, and
    the backward uses them in place: it cannot run twice."""
    shape, device = target.shape, hidden.device.type
    if torch.is_autocast_enabled(device):  # the output layer in autocast's dtype, as F.linear would be
        dtype = torch.get_autocast_dtype(device)
        hidden, weight = hidden.to(dtype), weight.to(dtype)
    with_gradients = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (hidden, weight, bias))
    with torch.autocast(device, enabled=False):
        total, losses = _OutputCrossEntropy.apply(hidden.reshape(-1, hidden.size(-1)), weight, bias, target.reshape(-1),
                                                  loss_weights.reshape(-1).float(), vocab_size, with_gradients,
                                                  chunk_elements)
    return total, losses.view(shape)
