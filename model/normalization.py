"""Normalization layers: LayerNorm (optionally computing in fp32 inside a bf16/fp16 model, Megatron-LM
v0's --fp32-layernorm), RMSNorm, and GPT-Neo's ScaleNorm (normalised to zero mean and unit variance,
then one learned scalar).

DeepSpeed casts every parameter to the training dtype, so v0's way of keeping LayerNorm modules in fp32
after model.half() is not open here; instead the input and the weights are upcast, the normalisation
runs in fp32 and the result returns in the input's dtype.
"""

import torch
import torch.nn.functional as F


class LayerNorm(torch.nn.LayerNorm):
    """Also computes in fp32 for an fp32 input to bf16/fp16 weights (BERT's --fp32-embedding); the output
    has the input's dtype."""
    compute_in_fp32 = False

    def forward(self, hidden):
        if hidden.dtype == self.weight.dtype and not self.compute_in_fp32:
            return super().forward(hidden)
        return F.layer_norm(hidden.float(), self.normalized_shape, self.weight.float(), self.bias.float(),
                            self.eps).to(hidden.dtype)


class RMSNorm(torch.nn.Module):
    """x / sqrt(mean(x^2) + eps) x weight, in fp32 inside (as torch's rms_norm under autocast)."""

    def __init__(self, hidden_size, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = torch.nn.Parameter(torch.ones(hidden_size))

    def forward(self, hidden):
        return F.rms_norm(hidden.float(), (hidden.size(-1),), self.weight.float(), self.eps).to(hidden.dtype)


class ScaleNorm(torch.nn.Module):
    """GPT-Neo's scale_norm: (x - mean) / sqrt(var + eps) x g, g one learned scalar (initialised to 1)."""

    def __init__(self, hidden_size, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.scale = torch.nn.Parameter(torch.ones(1))  # not 0-d: DeepSpeed broadcasts parameters as bytes

    def forward(self, hidden):
        normed = F.layer_norm(hidden.float(), (hidden.size(-1),), eps=self.eps)
        return (normed * self.scale.float()).to(hidden.dtype)


NORMS = {"layernorm": LayerNorm, "rmsnorm": RMSNorm, "scalenorm": ScaleNorm}


def make_norm(kind, hidden_size, eps):
    return NORMS[kind](hidden_size, eps=eps)


def compute_layernorms_in_fp32(model):
    """Every LayerNorm of `model` computes in fp32 from now on (RMSNorm and ScaleNorm always do); returns
    the model."""
    for module in model.modules():
        if isinstance(module, LayerNorm):
            module.compute_in_fp32 = True
    return model
