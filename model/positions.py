"""Position information inside attention: rotary embeddings (GPT-NeoX's, on the first --rotary-pct of
each head's dimensions) and ALiBi's linear distance biases; GPT-Neo's axial position table.

Rotary follows GPT-NeoX's layout: the rotated dimensions are split in two halves (x1, x2) that rotate
together ("rotate half"), with inverse frequencies base^(-2i / rotary dims). ALiBi's slopes are those of
the paper (a geometric series over the heads, interleaved for head counts that are not powers of two);
each tensor-parallel rank takes the slopes of its own heads.
"""

import math

import torch


def rotary_dims(head_dim, rotary_pct):
    return int(head_dim * rotary_pct) // 2 * 2


def rotary_cos_sin(positions, dims, base, dtype):
    """cos and sin [..., seq, dims] for integer positions [..., seq]."""
    inverse = 1.0 / (base ** (torch.arange(0, dims, 2, dtype=torch.float32, device=positions.device) / dims))
    angles = positions.float()[..., None] * inverse
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rotary(x, cos, sin):
    """x [batch, heads, seq, head dim]; cos/sin [batch or 1, seq, rotary dims]: rotate the first rotary dims."""
    dims = cos.size(-1)
    rotated, kept = x[..., :dims], x[..., dims:]
    half = dims // 2
    turned = torch.cat([-rotated[..., half:], rotated[..., :half]], dim=-1)
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return torch.cat([rotated * cos + turned * sin, kept], dim=-1)


def alibi_slopes(num_heads):
    """The slope of each head (Press et al.): 2^(-8 i / n) for n a power of two; otherwise the n' = largest
    power of two below n, then every other slope of 2n'."""
    def powers(n):
        start = 2 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]
    if math.log2(num_heads).is_integer():
        return torch.tensor(powers(num_heads))
    closest = 2 ** math.floor(math.log2(num_heads))
    return torch.tensor(powers(closest) + powers(2 * closest)[0::2][:num_heads - closest])


def alibi_bias(slopes, query_positions, key_positions):
    """[heads, queries, keys] additive biases: -slope x (query position - key position)."""
    distance = (query_positions[:, None] - key_positions[None, :]).float()
    return -slopes[:, None, None] * distance


def axial_positions(first, second, seq):
    """GPT-Neo's axial table: row i * d2 + j is (first[i] + second[j]) / 2, the first `seq` rows."""
    table = (first[:, None, :] + second[None, :, :]) / 2
    return table.reshape(-1, first.size(-1))[:seq]
