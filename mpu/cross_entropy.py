"""Cross-entropy over logits whose vocabulary dimension is split across tensor-parallel ranks.

The full logits are never gathered: each rank contributes its slice's max, then its sum of
exponentials and (on the rank that owns it) the target's logit, through two small all-reduces. The
pieces here also serve the fused output layer (output_cross_entropy.py), chunk by chunk. Columns from
`vocab_size` up (the rows a vocabulary is padded with for alignment) take no probability: they are
left out of the softmax, whatever their logits, and get no gradient.
"""

import torch
import torch.distributed as dist

from .initialize import get_model_parallel_group, get_model_parallel_rank, get_model_parallel_world_size
from .utils import VocabUtility


def vocabulary_slice(slice_size, vocab_size):
    """(the first vocabulary id of this rank's slice of slice_size rows, how many of the slice's rows are
    real: below vocab_size, the rest padding; None: all)."""
    vocab_start, _ = VocabUtility.vocab_range_from_per_partition_vocab_size(
        slice_size, get_model_parallel_rank(), get_model_parallel_world_size())
    real = slice_size if vocab_size is None else min(max(vocab_size - vocab_start, 0), slice_size)
    return vocab_start, real


def local_target(target, vocab_start, slice_size):
    """Each target's column in this rank's slice, -1 where another rank holds it."""
    local = target - vocab_start
    return local.masked_fill((local < 0) | (local >= slice_size), -1)


def softmax_and_loss(logits, probabilities, target, group):
    """Per-token loss of fp32 logits [tokens, slice] (this rank's slice; padding columns already -inf),
    and the softmax of the whole vocabulary (over the group when it is split) written into
    `probabilities`. target: local_target's columns. The loss comes from log-probabilities, never from a
    probability that may be below float32's range; nothing here reads a value back to the host."""
    here = target >= 0
    index = target.clamp(min=0).unsqueeze(1)
    if group is None:
        torch.log_softmax(logits, dim=1, out=probabilities)
        losses = -probabilities.gather(1, index).squeeze(1)
        probabilities.exp_()
        return losses
    maximum = logits.max(dim=1).values
    dist.all_reduce(maximum, op=dist.ReduceOp.MAX, group=group)
    torch.sub(logits, maximum.unsqueeze(1), out=probabilities)  # shifted first: no cancellation at large logits
    target_logit = probabilities.gather(1, index).squeeze(1).masked_fill(~here, 0.0)
    probabilities.exp_()
    sums = torch.stack([probabilities.sum(dim=1), target_logit])
    dist.all_reduce(sums, group=group)
    sum_exp, target_logit = sums
    probabilities.div_(sum_exp.unsqueeze(1))
    return torch.log(sum_exp) - target_logit


def subtract_one_hot(probabilities, target):
    """softmax - one-hot(target) in place: the logits' gradient of the loss (target: local_target's)."""
    here = (target >= 0).unsqueeze(1).to(probabilities.dtype)
    return probabilities.scatter_add_(1, target.clamp(min=0).unsqueeze(1), here.neg())


def model_parallel_group_if_split():
    return get_model_parallel_group() if get_model_parallel_world_size() > 1 else None


class _VocabParallelCrossEntropy(torch.autograd.Function):

    @staticmethod
    def forward(ctx, vocab_parallel_logits, target, vocab_size):
        slice_size = vocab_parallel_logits.size(-1)
        vocab_start, real = vocabulary_slice(slice_size, vocab_size)
        logits = vocab_parallel_logits.float().reshape(-1, slice_size)
        if real < slice_size:
            logits = logits.clone() if logits.data_ptr() == vocab_parallel_logits.data_ptr() else logits
            logits[:, real:] = float("-inf")
        columns = local_target(target.reshape(-1), vocab_start, slice_size)
        softmax = torch.empty_like(logits)
        loss = softmax_and_loss(logits, softmax, columns, model_parallel_group_if_split())
        ctx.input_dtype, ctx.logits_shape = vocab_parallel_logits.dtype, vocab_parallel_logits.shape
        ctx.save_for_backward(softmax, columns)
        return loss.view(target.shape)

    @staticmethod
    def backward(ctx, grad_output):
        softmax, columns = ctx.saved_tensors
        grad_input = subtract_one_hot(softmax, columns)  # in place: the logits' gradient is as large as the logits
        grad_input.mul_(grad_output.reshape(-1, 1))
        return grad_input.to(ctx.input_dtype).view(ctx.logits_shape), None, None


def vocab_parallel_cross_entropy(vocab_parallel_logits, target, vocab_size=None):
    """Per-token loss (target's shape, no reduction) from this rank's slice of the logits.

    vocab_size: the real vocabulary; padded columns from it up are out of the softmax (None: none are).
    Computed in float32 whatever the logits' dtype; the gradient comes back in the logits' dtype.
    The backward reuses the saved softmax in place, so it cannot be run twice (retain_graph).
    """
    return _VocabParallelCrossEntropy.apply(vocab_parallel_logits, target, vocab_size)
