"""Run a GPT-2 over evaluation windows and sum what the zero-shot tasks report.

A window is (inputs, targets, scored positions). Windows are batched (padded on the right, which a
causal model never attends to) and the batches dealt round-robin to the data-parallel ranks; each
tensor-parallel group runs its batches together and the sums are reduced over data-parallel ranks.
"""

import torch
import torch.distributed as dist
import torch.nn.functional as F
from deepspeed.accelerator import get_accelerator

import mpu


def _padded(rows, length, device):
    return torch.tensor([row + [0] * (length - len(row)) for row in rows], dtype=torch.long, device=device)


@torch.no_grad()
def score(model, windows, batch_size, vocab_size):
    """{"loss": summed loss of the scored targets, "targets": their number, "correct": windows whose
    scored targets are all the model's argmax, "windows": their number}, over all ranks. Logits past
    vocab_size (vocabulary padding) take no part."""
    device = get_accelerator().current_device_name()
    sums = torch.zeros(4, dtype=torch.float64, device=device)
    batches = range(mpu.get_data_parallel_rank() * batch_size, len(windows),
                    mpu.get_data_parallel_world_size() * batch_size)
    for first in batches:
        batch = windows[first:first + batch_size]
        length = max(len(inputs) for inputs, _, _ in batch)
        inputs = _padded([w[0] for w in batch], length, device)
        targets = _padded([w[1] for w in batch], length, device)
        scored = torch.zeros(len(batch), length, dtype=torch.bool, device=device)
        for row, (_, _, positions) in enumerate(batch):
            scored[row, positions] = True
        logits = model(inputs)[..., :vocab_size].float()
        losses = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
        hits = (logits.argmax(dim=-1) == targets) | ~scored
        sums += torch.stack([losses[scored].sum().double(), scored.sum().double(),
                             hits.all(dim=1).sum().double(), torch.tensor(len(batch), dtype=torch.float64,
                                                                          device=device)])
    dist.all_reduce(sums, group=mpu.get_data_parallel_group())
    loss, targets, correct, count = sums.tolist()
    return {"loss": loss, "targets": int(targets), "correct": int(correct), "windows": int(count)}
