"""Megatron-style learning-rate schedule (--lr-decay-style) as a torch LambdaLR on the engine's optimizer.

Linear warmup over `warmup_iters` steps to --lr, then decay over the remaining steps to
--lr-decay-iters: constant, linear or cosine down to --min-lr, or exponential (halving once over the
decay period, floored at --min-lr, as Megatron-LM v1 did). After --lr-decay-iters the rate stays at
--min-lr (constant: at --lr).

DeepSpeed builds the optimizer from the ds_config, so the schedule is handed to deepspeed.initialize
as a callable and attached to the optimizer DeepSpeed actually steps.
"""

import math

from torch.optim.lr_scheduler import LambdaLR


def learning_rate(step, max_lr, min_lr, warmup_iters, decay_iters, style):
    """The rate of optimizer step `step` (0-based)."""
    if step < warmup_iters:
        return max_lr * (step + 1) / warmup_iters
    if style == "constant":
        return max_lr
    if step >= decay_iters:
        return min_lr
    progress = (step - warmup_iters) / max(decay_iters - warmup_iters, 1)
    if style == "linear":
        return min_lr + (max_lr - min_lr) * (1.0 - progress)
    if style == "cosine":
        return min_lr + (max_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if style == "exponential":
        return max(min_lr, max_lr * 0.5 ** progress)
    raise ValueError(f"--lr-decay-style {style!r}: expected constant, linear, cosine or exponential")


def megatron_scheduler(args):
    """A callable optimizer -> LambdaLR for deepspeed.initialize(lr_scheduler=...)."""
    warmup_iters = int(args.warmup * args.lr_decay_iters)

    def schedule(optimizer):
        return LambdaLR(optimizer, lambda step: learning_rate(step, args.lr, args.min_lr, warmup_iters,
                                                              args.lr_decay_iters, args.lr_decay_style) / args.lr)
    return schedule
