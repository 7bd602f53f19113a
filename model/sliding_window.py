"""Local attention (causal within the last `window` positions, GPT-Neo's) through PyTorch's
FlexAttention, the way it runs on a GPU: one compiled kernel that visits only the key blocks a
sliding-window block mask leaves (time grows with seq x window, as flash attention's with seq^2 / 2
for global attention), where model.transformer.local_attention's blocked computation materialises
[window, 2 x window] scores per block through SDPA's unfused path.

FlexAttention has no dropout, and on a CPU no backward (torch refuses it): training on a CPU, and with
attention dropout, keeps the blocked computation; on a CPU the forward here runs eagerly (unfused), for
the tests that hold it equal to the blocked computation.
"""

import functools

import torch
from torch.nn.attention.flex_attention import create_block_mask, flex_attention


@functools.lru_cache(maxsize=16)
def _sliding_window_mask(seq, window, device):
    def sliding_window(batch, head, query, key):
        return (key <= query) & (query - key < window)
    return create_block_mask(sliding_window, None, None, seq, seq, device=device)


@functools.lru_cache(maxsize=1)
def _compiled_flex_attention():
    return torch.compile(flex_attention, dynamic=False)


def flex_local_attention(q, k, v, window, scale=None):
    """Causal attention of q, k, v [batch, heads, seq, dim] within the last `window` positions; compiled
    on a GPU, eager (forward only) on a CPU."""
    mask = _sliding_window_mask(q.size(2), window, str(q.device))
    attend = _compiled_flex_attention() if q.is_cuda else flex_attention
    return attend(q, k, v, block_mask=mask, scale=scale)


def flex_runs_local_attention(q, dropout):
    """Whether local attention of q runs here: on a GPU, without attention dropout."""
    return q.is_cuda and not dropout
