"""LayerNorm that can compute in fp32 inside a bf16/fp16 model (Megatron-LM v0's --fp32-layernorm).

DeepSpeed casts every parameter to the training dtype, so v0's way (keeping the LayerNorm modules in
fp32 after model.half()) is not open here; instead the input and the weights are upcast, the
normalisation runs in fp32 and the result returns in the input's dtype.
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


def compute_layernorms_in_fp32(model):
    """Every LayerNorm of `model` computes in fp32 from now on; returns the model."""
    for module in model.modules():
        if isinstance(module, LayerNorm):
            module.compute_in_fp32 = True
    return model
