"""Mixture of experts through DeepSpeed's MoE layer (deepspeed.moe.layer.MoE), in place of a layer's MLP.

A top-k gate routes each token to k of --num-experts experts (each a ParallelMLP at tensor-parallel size
1), at most a capacity of ceil(tokens / experts x --moe-capacity-factor) tokens each (the rest pass
the layer unchanged, through the residual); the experts are spread over --moe-expert-parallel-size
data-parallel ranks, tokens reaching them by all-to-all. The gate's load-balancing loss (GShard's,
computed over each rank's own tokens) is kept as `aux_loss` after every forward for the training loss
(moe_aux_loss). DeepSpeed builds the local experts as copies of one; each is re-initialised here from
its own global expert number, so the model is the same whatever the expert-parallel layout. Token
selection under capacity is by position (use_rts off), never random, so runs repeat exactly.
"""

import torch
from deepspeed.moe.layer import MoE

import mpu


class MoEMLP(torch.nn.Module):
    def __init__(self, expert, hidden_size, num_experts, expert_parallel_size, top_k, capacity_factor, min_capacity,
                 seed, init_stds):
        """expert: a ParallelMLP to copy; init_stds(parameter name) -> the normal std of that weight."""
        super().__init__()
        self.moe = MoE(hidden_size, expert, num_experts=num_experts, ep_size=expert_parallel_size, k=top_k,
                       capacity_factor=capacity_factor, eval_capacity_factor=capacity_factor,
                       min_capacity=min_capacity, use_rts=False)
        local = self.moe.deepspeed_moe.experts.deepspeed_experts
        first = (mpu.get_data_parallel_rank() % expert_parallel_size) * len(local)
        for number, copy in enumerate(local):
            generator = torch.Generator().manual_seed(seed * 1009 + first + number)
            with torch.no_grad():
                for name, param in copy.named_parameters():
                    if name.endswith("bias"):
                        param.zero_()
                    else:
                        param.normal_(0.0, init_stds(name), generator=generator)
        self.aux_loss = None

    def forward(self, hidden):
        output, self.aux_loss, _ = self.moe(hidden)
        return output


def route_every_token(model):
    """Evaluation and generation: every token reaches its experts (no capacity limit, no minimum
    capacity, so one token at a time generates). Training's capacity bounds a step's work; a model is
    scored on all its tokens."""
    for module in model.modules():
        if isinstance(module, MoEMLP):
            module.moe.deepspeed_moe.gate.drop_tokens = False
            module.moe.deepspeed_moe.gate.min_capacity = 0


def is_moe(model):
    return any(isinstance(module, MoEMLP) for module in model.modules())


def active_expert_parameters(model):
    """Expert parameters a token runs through: top-k experts' in every MoE layer."""
    return sum(module.moe.deepspeed_moe.gate.k * sum(p.numel() for p in
                                                     module.moe.deepspeed_moe.experts.deepspeed_experts[0].parameters())
               for module in model.modules() if isinstance(module, MoEMLP))


def moe_aux_loss(model):
    """The sum of the MoE layers' load-balancing losses of the last forward, or None without MoE layers."""
    losses = [module.aux_loss for module in model.modules() if isinstance(module, MoEMLP)]
    return sum(losses) if losses else None
