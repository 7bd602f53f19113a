"""Run a GPT-2 over evaluation windows: the sums the zero-shot tasks report, or each window's
log-likelihood (the lm-evaluation-harness adapter).

A window is (inputs, targets, scored positions). Windows are batched, padded on the right, which a
causal model never attends to. `score` deals the batches round-robin to the data-parallel ranks and
reduces its sums over them; each tensor-parallel group runs its batches together.
"""

import torch
import torch.distributed as dist
import torch.nn.functional as F
from deepspeed.accelerator import get_accelerator

import mpu


def _padded(rows, length, device):
    return torch.tensor([row + [0] * (length - len(row)) for row in rows], dtype=torch.long, device=device)


def _batch_scores(model, batch, vocab_size):
    """(summed loss of each window's scored targets, their number, whether all of them are the model's
    argmax) for a batch of windows, as tensors on the device. Logits past vocab_size (vocabulary
    padding) take no part."""
    device = get_accelerator().current_device_name()
    length = max(len(inputs) for inputs, _, _ in batch)
    inputs = _padded([w[0] for w in batch], length, device)
    targets = _padded([w[1] for w in batch], length, device)
    scored = torch.zeros(len(batch), length, dtype=torch.bool, device=device)
    for row, (_, _, positions) in enumerate(batch):
        scored[row, positions] = True
    logits = model(inputs)[..., :vocab_size].float()
    losses = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none").masked_fill(~scored, 0.0)
    hits = (logits.argmax(dim=-1) == targets) | ~scored
    return losses.double().sum(dim=1), scored.sum(dim=1), hits.all(dim=1)


@torch.no_grad()
def score(model, windows, batch_size, vocab_size):
    """{"loss": summed loss of the scored targets, "targets": their number, "correct": windows whose
    scored targets are all the model's argmax, "windows": their number}, over all ranks."""
    sums = torch.zeros(4, dtype=torch.float64, device=get_accelerator().current_device_name())
    batches = range(mpu.get_data_parallel_rank() * batch_size, len(windows),
                    mpu.get_data_parallel_world_size() * batch_size)
    for first in batches:
        losses, targets, correct = _batch_scores(model, windows[first:first + batch_size], vocab_size)
        sums += torch.stack([losses.sum(), targets.sum().double(), correct.sum().double(),
                             torch.tensor(float(len(losses)), dtype=torch.float64, device=sums.device)])
    dist.all_reduce(sums, group=mpu.get_data_parallel_group())
    loss, targets, correct, count = sums.tolist()
    return {"loss": loss, "targets": int(targets), "correct": int(correct), "windows": int(count)}


@torch.no_grad()
def log_likelihoods(model, windows, batch_size, vocab_size):
    """[(log-likelihood of the window's scored targets, whether every one is the model's argmax)] in the
    order of `windows`, all computed on this rank; batched longest first, so rows of a batch have
    nearly equal lengths."""
    order = sorted(range(len(windows)), key=lambda index: -len(windows[index][0]))
    results = [None] * len(windows)
    for first in range(0, len(order), batch_size):
        chosen = order[first:first + batch_size]
        losses, _, greedy = _batch_scores(model, [windows[index] for index in chosen], vocab_size)
        for index, loss, all_greedy in zip(chosen, losses.tolist(), greedy.tolist()):
            results[index] = (-loss, all_greedy)
    return results
