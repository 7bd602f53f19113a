"""Cross-entropy over logits whose vocabulary dimension is split across tensor-parallel ranks.

The full logits are never gathered: each rank contributes its slice's max, its sum of exponentials
and (on the rank that owns it) the target's logit, through three small all-reduces. Columns from
`vocab_size` up (the rows a vocabulary is padded with for alignment) take no probability: they are
left out of the softmax, whatever their logits, and get no gradient.
"""

import torch
import torch.distributed as dist

from .initialize import get_model_parallel_group, get_model_parallel_rank, get_model_parallel_world_size
from .utils import VocabUtility


class _VocabParallelCrossEntropy(torch.autograd.Function):

    @staticmethod
    def forward(ctx, vocab_parallel_logits, target, vocab_size):
        group = get_model_parallel_group()
        partition_vocab_size = vocab_parallel_logits.size(-1)
        vocab_start, vocab_end = VocabUtility.vocab_range_from_per_partition_vocab_size(
            partition_vocab_size, get_model_parallel_rank(), get_model_parallel_world_size())
        logits = vocab_parallel_logits.float()
        if vocab_size is not None and vocab_end > vocab_size:
            logits = logits.clone() if logits is vocab_parallel_logits else logits
            logits[..., max(vocab_size - vocab_start, 0):] = float("-inf")
        logits_max = logits.max(dim=-1).values
        dist.all_reduce(logits_max, op=dist.ReduceOp.MAX, group=group)
        logits = logits - logits_max.unsqueeze(-1)

        target_outside = (target < vocab_start) | (target >= vocab_end)
        local_target = (target - vocab_start).masked_fill(target_outside, 0)

        predicted_logits = logits.gather(-1, local_target.unsqueeze(-1)).squeeze(-1)
        predicted_logits = predicted_logits.masked_fill(target_outside, 0.0)
        dist.all_reduce(predicted_logits, group=group)

        exp_logits = logits.exp_()
        sum_exp_logits = exp_logits.sum(dim=-1)
        dist.all_reduce(sum_exp_logits, group=group)

        loss = torch.log(sum_exp_logits) - predicted_logits
        softmax = exp_logits.div_(sum_exp_logits.unsqueeze(-1))
        ctx.input_dtype = vocab_parallel_logits.dtype
        ctx.save_for_backward(softmax, target_outside, local_target)
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        softmax, target_outside, local_target = ctx.saved_tensors
        grad_input = softmax  # reused in place: the logits' gradient is as large as the logits
        one_hot_here = (~target_outside).to(grad_input.dtype).unsqueeze(-1)
        grad_input.scatter_add_(-1, local_target.unsqueeze(-1), -one_hot_here)
        grad_input.mul_(grad_output.unsqueeze(-1))
        return grad_input.to(ctx.input_dtype), None, None


def vocab_parallel_cross_entropy(vocab_parallel_logits, target, vocab_size=None):
    """Per-token loss (target's shape, no reduction) from this rank's slice of the logits.

    vocab_size: the real vocabulary; padded columns from it up are out of the softmax (None: none are).
    Computed in float32 whatever the logits' dtype; the gradient comes back in the logits' dtype.
    The backward reuses the saved softmax in place, so it cannot be run twice (retain_graph).
    """
    return _VocabParallelCrossEntropy.apply(vocab_parallel_logits, target, vocab_size)
