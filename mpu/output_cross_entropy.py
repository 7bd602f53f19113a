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
import torch.distributed as dist

from .initialize import get_model_parallel_group, get_model_parallel_rank, get_model_parallel_world_size
from .utils import VocabUtility

CHUNK_ELEMENTS = 1 << 25  # logits per chunk (128 MiB in fp32): large matrix multiplies, memory bounded


def _softmax(logits, probabilities, group):
    """The softmax of the whole vocabulary (all-reduced over the group when it is split) of this slice's
    fp32 logits [tokens, slice], written into `probabilities`."""
    if group is None:
        return torch.softmax(logits, dim=1, out=probabilities)
    maximum = logits.max(dim=1).values
    dist.all_reduce(maximum, op=dist.ReduceOp.MAX, group=group)
    torch.sub(logits, maximum.unsqueeze(1), out=probabilities).exp_()
    sum_exp = probabilities.sum(dim=1)
    dist.all_reduce(sum_exp, group=group)
    return probabilities.div_(sum_exp.unsqueeze(1))


def _chunk_loss(logits, probabilities, target, group):
    """Per-token loss of one chunk: -log of the target's probability, all-reduced from the rank that
    holds the target (target: its column in this slice, -1 elsewhere). Where that probability is below
    float32's normal range the loss is computed from the logits instead (log-sum-exp minus the target's
    logit), so a confident wrong prediction has its true loss, not infinity."""
    rows = (target >= 0).nonzero().squeeze(1)
    target_probability = torch.zeros(logits.size(0), dtype=torch.float32, device=logits.device)
    target_probability[rows] = probabilities[rows, target[rows]]
    if group is not None:
        dist.all_reduce(target_probability, group=group)
    losses = -torch.log(target_probability)
    underflow = (target_probability < torch.finfo(torch.float32).tiny).nonzero().squeeze(1)
    if underflow.numel():
        log_sum_exp = torch.logsumexp(logits[underflow], dim=1)
        target_logit = torch.zeros_like(log_sum_exp)
        here = target[underflow] >= 0
        target_logit[here] = logits[underflow[here], target[underflow[here]]]
        if group is not None:
            maximum = log_sum_exp.clone()
            dist.all_reduce(maximum, op=dist.ReduceOp.MAX, group=group)
            log_sum_exp = (log_sum_exp - maximum).exp_()
            dist.all_reduce(log_sum_exp, group=group)
            log_sum_exp = log_sum_exp.log_().add_(maximum)
            dist.all_reduce(target_logit, group=group)
        losses[underflow] = log_sum_exp - target_logit
    return losses, rows


class _OutputCrossEntropy(torch.autograd.Function):

    @staticmethod
    def forward(ctx, hidden, weight, target, loss_weights, vocab_size, with_gradients):
        group = get_model_parallel_group() if get_model_parallel_world_size() > 1 else None
        slice_size = weight.size(0)
        vocab_start, _ = VocabUtility.vocab_range_from_per_partition_vocab_size(
            slice_size, get_model_parallel_rank(), get_model_parallel_world_size())
        real_columns = slice_size if vocab_size is None else min(max(vocab_size - vocab_start, 0), slice_size)
        local_target = target - vocab_start
        local_target = local_target.masked_fill((local_target < 0) | (local_target >= slice_size), -1)
        tokens = hidden.size(0)
        chunks = -(-tokens * slice_size // CHUNK_ELEMENTS)
        chunk = -(-tokens // max(chunks, 1))  # equal chunks: a short last one would multiply slowly
        buffers = torch.empty(2, chunk, slice_size, dtype=torch.float32, device=hidden.device)
        losses = torch.empty(tokens, dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if with_gradients else None
        grad_weight = None
        for start in range(0, tokens, chunk):
            end = min(start + chunk, tokens)
            part, weights = hidden[start:end], loss_weights[start:end].unsqueeze(1)
            logits, probabilities = buffers[0, :end - start], buffers[1, :end - start]
            if hidden.dtype == torch.float32:
                torch.mm(part, weight.t(), out=logits)
            else:
                logits.copy_(part @ weight.t())
            if real_columns < slice_size:
                logits[:, real_columns:] = float("-inf")
            _softmax(logits, probabilities, group)
            losses[start:end], rows = _chunk_loss(logits, probabilities, local_target[start:end], group)
            if not with_gradients:
                continue
            probabilities[rows, local_target[start:end][rows]] -= 1.0  # the logits' gradient, unweighted
            grad_logits = probabilities.to(hidden.dtype)
            # weighting rows of the [tokens, slice] gradient = weighting rows of the small operands
            torch.mm(grad_logits, weight, out=grad_hidden[start:end]).mul_(weights)
            weighted_part = part * weights.to(part.dtype)
            if grad_weight is None:
                grad_weight = torch.mm(grad_logits.t(), weighted_part).float()
            elif grad_logits.dtype == torch.float32:
                grad_weight.addmm_(grad_logits.t(), weighted_part)
            else:  # bf16/fp16 products summed in fp32 over the chunks
                grad_weight.add_(grad_logits.t() @ weighted_part)
        if with_gradients:
            ctx.save_for_backward(grad_hidden, grad_weight.to(weight.dtype))
        ctx.mark_non_differentiable(losses)
        return (losses * loss_weights).sum(), losses

    @staticmethod
    def backward(ctx, grad_loss, _):
        grad_hidden, grad_weight = ctx.saved_tensors
        return grad_hidden.mul_(grad_loss), grad_weight.mul_(grad_loss), None, None, None, None


def vocab_parallel_output_cross_entropy(hidden, weight, target, loss_weights, vocab_size=None):
    """(sum over tokens of loss_weights x cross-entropy of hidden @ weight.T against target, the per-token
    losses). hidden [..., h]: the output layer's input (through copy_to_model_parallel_region); weight:
    this rank's rows of the output layer [vocab / TP, h]; target, loss_weights: hidden's leading shape.
    vocab_size: the real vocabulary; rows from it up are padding and take no probability (None: all
    count). The per-token losses (float32) carry no gradient. Gradients are computed in the forward pass
    only where autograd will want them, and the backward uses them in place: it cannot run twice."""
    shape = target.shape
    with_gradients = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    total, losses = _OutputCrossEntropy.apply(hidden.reshape(-1, hidden.size(-1)), weight, target.reshape(-1),
                                              loss_weights.reshape(-1).float(), vocab_size, with_gradients)
    return total, losses.view(shape)
