"""Several documents packed into one sample, kept apart as Megatron-LM's --reset-position-ids and
--reset-attention-mask do: positions restart after each end-of-document token, and no position
attends across one. The end-of-document token belongs to the document it ends."""

import torch


def document_ids(tokens, eod):
    """[batch, seq]: the number of end-of-document tokens before each position."""
    is_eod = (tokens == eod).long()
    return is_eod.cumsum(dim=-1) - is_eod


def document_position_ids(documents):
    """[batch, seq]: each position's offset in its document (from document_ids)."""
    seq = documents.size(-1)
    steps = torch.arange(seq, device=documents.device).expand_as(documents)
    starts = torch.ones_like(documents, dtype=torch.bool)
    starts[:, 1:] = documents[:, 1:] != documents[:, :-1]
    return steps - torch.where(starts, steps, torch.zeros_like(steps)).cummax(dim=-1).values


def document_attention_mask(documents):
    """[batch, 1, seq, seq] boolean mask for scaled_dot_product_attention, True where a position may
    attend: earlier or the same positions of its own document."""
    seq = documents.size(-1)
    causal = torch.ones(seq, seq, dtype=torch.bool, device=documents.device).tril()
    return ((documents[:, :, None] == documents[:, None, :]) & causal).unsqueeze(1)
