"""Megatron-style learning-rate schedule (--lr-decay-style) as a torch LambdaLR on the engine's optimizer.

Linear warmup over `warmup_iters` steps to --lr, then decay over the remaining steps to
--lr-decay-iters: constant, linear or cosine down to --min-lr, or exponential (halving once over the
decay period, floored at --min-lr, as Megatron-LM v1 did). After --lr-decay-iters the rate stays at
--min-lr (constant: at --lr).

DeepSpeed builds the optimizer from the ds_config, so the schedule is handed to deepspeed.initialize
as a callable and attached to the optimizer DeepSpeed actually steps.

On resume the schedule's settings come from the checkpoint, as in Megatron-LM: a flag given on the
command line that disagrees with the checkpoint is an error, unless --override-lr-scheduler (the
flags win) or --use-checkpoint-lr-scheduler (the checkpoint wins); a setting left at its default takes
the checkpoint's value.
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


def warmup_iters(args):
    """Warmup steps: --warmup x --lr-decay-iters, rounded down (the small tolerance keeps an exact
    --lr-warmup-iters N, held as the fraction N / decay iterations, at N)."""
    return int(args.warmup * args.lr_decay_iters + 1e-6)


SCHEDULE_FLAGS = {"lr": "--lr", "min_lr": "--min-lr", "lr_decay_style": "--lr-decay-style",
                  "lr_decay_iters": "--lr-decay-iters", "warmup": "--warmup"}


def megatron_scheduler(args):
    """A callable optimizer -> LambdaLR for deepspeed.initialize(lr_scheduler=...). The rate follows
    args' settings as they are when it is computed (see settings_from_checkpoint)."""
    def rate(step):
        return learning_rate(step, args.lr, args.min_lr, warmup_iters(args), args.lr_decay_iters,
                             args.lr_decay_style) / args.lr

    def schedule(optimizer):
        return LambdaLR(optimizer, rate)
    return schedule


def settings_from_checkpoint(args, saved_args):
    """Apply Megatron's rule (see the module docstring) to args; returns a line naming the settings
    taken from the checkpoint, or None. Raises ValueError for a given flag that disagrees."""
    differing = {name: saved_args[name] for name in SCHEDULE_FLAGS
                 if name in saved_args and saved_args[name] != getattr(args, name)}
    if not differing or args.override_lr_scheduler:
        return None
    given = [name for name in differing if name in args.explicit]
    if given and not args.use_checkpoint_lr_scheduler:
        conflicts = ", ".join(f"{SCHEDULE_FLAGS[n]} {getattr(args, n)} (checkpoint: {differing[n]})" for n in given)
        raise ValueError(f"the learning-rate schedule differs from the checkpoint's: {conflicts}; add "
                         "--override-lr-scheduler to take the flags or --use-checkpoint-lr-scheduler to take the "
                         "checkpoint's")
    for name, value in differing.items():
        setattr(args, name, value)
    return "learning-rate schedule from the checkpoint: " + ", ".join(
        f"{SCHEDULE_FLAGS[n]} {v}" for n, v in differing.items())


def continue_schedule(scheduler, iteration, lr):
    """Set a megatron_scheduler's LambdaLR (and its optimizer) to `iteration` of the schedule with
    peak rate `lr`: after a resume whose settings changed, or whose scheduler state was not loaded."""
    scheduler.base_lrs = [lr] * len(scheduler.base_lrs)
    scheduler.last_epoch = iteration
    rates = [base * rate(iteration) for base, rate in zip(scheduler.base_lrs, scheduler.lr_lambdas)]
    for group, value in zip(scheduler.optimizer.param_groups, rates):
        group["lr"] = value
    scheduler._last_lr = rates
