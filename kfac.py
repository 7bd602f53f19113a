"""K-FAC: a Kronecker-factored preconditioner of the gradients of the transformer's mpu linear layers.

Martens & Grosse (2015), in the eigendecomposition form of kfac-pytorch (Pauloski et al.). A linear layer
y = W x (+ b) has a Fisher block approximated by A (x) G, A = E[x x^T] over its input rows (x with a
trailing 1 when the bias shares W's input factor) and G = E[g g^T] over the gradients of each token's own
loss with respect to its output rows. Every --kfac-factor-update-steps iterations the hooks sum x x^T and
g g^T over the iteration's micro-batches, the sums are added over the data-parallel ranks, and the running
factors become decay x old + (1 - decay) x new (the first update sets them). Every
--kfac-inv-update-steps iterations each factor is eigendecomposed, A = Q_A diag(d_A) Q_A^T and likewise G,
each factor on one data-parallel rank and then broadcast. Each iteration the averaged gradient of W is
replaced by

    P = Q_G [(Q_G^T grad Q_A) / (d_G d_A^T + damping)] Q_A^T,

the damped inverse of A (x) G applied to it, and all preconditioned gradients are scaled by
nu = min(1, sqrt(kl_clip / (lr^2 sum <P, grad>))) (the KL clip) before DeepSpeed's optimizer step, which
then clips, moments and decays them as it does any gradient.

Tensor parallelism: a column-parallel layer holds rows of W, so its G is its shard's diagonal block of
the whole G (block-diagonal across tensor ranks) and its A is whole; a row-parallel layer holds columns,
so its A is its shard's block and its G is whole. A row-parallel layer's bias, added after the
tensor-parallel sum, has the constant input as a block of its own (A = 1): it is preconditioned by G
alone, alike on every tensor rank. --kfac-tensor-blocks N splits the factors as tensor-parallel size N
does (by default the run's size), so one process with N = 2 computes what two tensor ranks compute.

Scope: fp32 weights (fp32, or --bf16 autocast) at ZeRO-0 or ZeRO-1, without pipeline stages; experts of a
mixture are left out (their data-parallel groups are their own).
"""

import os
import re

import torch
import torch.distributed as dist
from deepspeed.moe.utils import is_moe_param

import mpu
from initialize import UsageError, print_rank_0
from model.transformer import ParallelTransformerLayer

STATE_FILE = "kfac_states_mp_rank_{:02d}.pt"


def block_indices(size, blocks, stride, device=None):
    """The positions of a dimension of `size` that each of `blocks` tensor ranks holds (mpu's split: the
    dimension cut into blocks x stride chunks, rank r taking chunks r, r + blocks, ...)."""
    chunks = torch.arange(size, device=device).split(size // (blocks * stride))
    return [torch.cat(chunks[r::blocks]) for r in range(blocks)]


def eigen(factor):
    """(eigenvectors, eigenvalues clamped at 0) of a symmetric factor."""
    values, vectors = torch.linalg.eigh(factor)
    return vectors, values.clamp(min=0.0)


def precondition_blocks(grad, g_blocks, a_blocks, damping):
    """(A (x) G + damping)^-1 applied to `grad` [out, in], A and G block-diagonal: g_blocks and a_blocks are
    [(row or column positions, or None for all), eigenvectors, eigenvalues]; one of the two is split."""
    result = torch.empty_like(grad)
    for rows, q_g, d_g in g_blocks:
        for columns, q_a, d_a in a_blocks:
            index = (slice(None) if rows is None else rows, slice(None) if columns is None else columns)
            scaled = (q_g.T @ grad[index] @ q_a) / (d_g[:, None] * d_a[None, :] + damping)
            result[index] = q_g @ scaled @ q_a.T
    return result


class KFACLayer:
    """One mpu linear layer's factors: the input factor A (blocks over input positions) and the output
    factor G (blocks over output positions), their running averages, sums and eigendecompositions."""

    def __init__(self, name, module, tensor_blocks):
        self.name, self.module = name, module
        weight = module.weight
        local_blocks = tensor_blocks // mpu.get_model_parallel_world_size()
        self.row_parallel = isinstance(module, mpu.RowParallelLinear)
        stride = getattr(weight, "partition_stride", 1)
        out_size, in_size = weight.shape
        split, split_stride = (in_size, 1) if self.row_parallel else (out_size, stride)
        if split % (local_blocks * split_stride):
            raise UsageError(f"--kfac-tensor-blocks {tensor_blocks}: a dimension of {split} positions of {name} does "
                             f"not split into {local_blocks} blocks (stride {split_stride}); give a divisor")
        self.homogeneous = module.bias is not None and not self.row_parallel  # bias in A's last position
        a_size = in_size + self.homogeneous
        split_side = block_indices(split, local_blocks, split_stride, weight.device) if local_blocks > 1 else [None]
        self.a_positions, self.g_positions = (split_side, [None]) if self.row_parallel else ([None], split_side)
        self.a_sizes = [a_size if p is None else len(p) for p in self.a_positions]
        self.g_sizes = [out_size if p is None else len(p) for p in self.g_positions]
        self.factors = None  # [A blocks, G blocks], running averages
        self.eigen = None  # [[(Q, d)] of A, [(Q, d)] of G]
        self.sums, self.rows = None, 0

    def parameters(self):
        return [p for p in (self.module.weight, self.module.bias) if p is not None]

    def start_sums(self, device):
        self.sums = [[torch.zeros(n, n, device=device) for n in sizes] for sizes in (self.a_sizes, self.g_sizes)]
        self.rows = 0

    def add_input(self, x):
        x = x.detach().reshape(-1, x.size(-1)).float()
        if self.homogeneous:
            x = torch.cat([x, x.new_ones(x.size(0), 1)], dim=1)
        for total, positions in zip(self.sums[0], self.a_positions):
            part = x if positions is None else x[:, positions]
            total.addmm_(part.T, part)
        self.rows += x.size(0)

    def add_output_gradient(self, g, scale):
        g = g.detach().reshape(-1, g.size(-1)).float() * scale
        for total, positions in zip(self.sums[1], self.g_positions):
            part = g if positions is None else g[:, positions]
            total.addmm_(part.T, part)

    def gradient(self):
        """This layer's gradient as one matrix [out, in (+1 for a bias in A)], and the row-parallel bias's."""
        weight, bias = self.module.weight.grad, None if self.module.bias is None else self.module.bias.grad
        if self.homogeneous:
            return torch.cat([weight, bias[:, None]], dim=1), None
        return weight, bias

    def precondition(self, damping):
        """(gradient matrix, its preconditioned form, a row-parallel bias's preconditioned gradient or None)."""
        matrix, separate_bias = self.gradient()
        a_blocks = [(p, *e) for p, e in zip(self.a_positions, self.eigen[0])]
        g_blocks = [(p, *e) for p, e in zip(self.g_positions, self.eigen[1])]
        preconditioned = precondition_blocks(matrix, g_blocks, a_blocks, damping)
        if separate_bias is None:
            return matrix, preconditioned, None
        (_, q_g, d_g), = g_blocks
        return matrix, preconditioned, q_g @ ((q_g.T @ separate_bias) / (d_g + damping))

    def write(self, preconditioned, bias, nu):
        weight = self.module.weight.grad
        weight.copy_(preconditioned[:, :weight.size(1)] * nu)
        if self.homogeneous:
            self.module.bias.grad.copy_(preconditioned[:, -1] * nu)
        elif bias is not None:
            self.module.bias.grad.copy_(bias * nu)


class KFAC:
    """The preconditioner of a model's chosen layers (see the module's docstring). `step(lr)` runs once per
    iteration on the data-parallel-averaged gradients, before the optimizer; `capturing` says whether this
    iteration's forward and backward feed the factors."""

    def __init__(self, model, args):
        self.factor_steps, self.inverse_steps = args.kfac_factor_update_steps, args.kfac_inv_update_steps
        self.damping, self.decay, self.kl_clip = args.kfac_damping, args.kfac_factor_decay, args.kfac_kl_clip
        self.tensor_blocks = args.kfac_tensor_blocks or mpu.get_model_parallel_world_size()
        self.layers = [KFACLayer(name, module, self.tensor_blocks)
                       for name, module in chosen_layers(model, args.kfac_skip_layers)]
        if not self.layers:
            raise UsageError(f"--kfac: no layer left to precondition (--kfac-skip-layers {args.kfac_skip_layers})")
        self.steps, self.fresh = 0, True  # fresh: no factors yet, capture and decompose at the next iteration
        self.output_gradient_scale = 1.0
        self.handles = [layer.module.register_forward_hook(self._forward_hook(layer)) for layer in self.layers]

    @property
    def capturing(self):
        return self.fresh or self.steps % self.factor_steps == 0

    def _forward_hook(self, layer):
        def hook(module, inputs, output):
            if not (self.capturing and torch.is_grad_enabled() and output.requires_grad):
                return  # evaluation, or the first pass of a checkpointed layer (its recompute captures)
            if layer.sums is None:
                layer.start_sums(output.device)
            with torch.autocast(output.device.type, enabled=False):  # the sums in fp32 under mixed precision
                layer.add_input(inputs[0])
            scale = self.output_gradient_scale
            output.register_hook(lambda g: layer.add_output_gradient(g, scale))
        return hook

    def parameters(self):
        return [p for layer in self.layers for p in layer.parameters()]

    def average_gradients(self):
        """Average the preconditioned layers' gradients over the data-parallel ranks (for ZeRO-1, whose own
        reduction leaves each rank a partition only: it then averages equal gradients)."""
        if mpu.get_data_parallel_world_size() == 1:
            return
        grads = [p.grad for p in self.parameters()]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, group=mpu.get_data_parallel_group())
        flat /= mpu.get_data_parallel_world_size()
        for g, part in zip(grads, flat.split([g.numel() for g in grads])):
            g.copy_(part.view_as(g))

    def step(self, lr):
        """Update factors and decompositions when due, then precondition and KL-clip the gradients."""
        factors_due, eigen_due = self.capturing, self.fresh or self.steps % self.inverse_steps == 0
        self.steps += 1
        if factors_due:
            self._update_factors()
        if self.layers[0].factors is None:  # non-finite first factors: this step takes the plain gradient
            return
        if eigen_due or self.layers[0].eigen is None:
            self._update_eigen()
        self.fresh = False
        results = [layer.precondition(self.damping) for layer in self.layers]
        inner = torch.zeros((), device=results[0][0].device)
        replicated = mpu.get_model_parallel_rank() == 0  # a row-parallel bias is alike on every tensor rank
        for layer, (matrix, preconditioned, bias) in zip(self.layers, results):
            inner += (preconditioned * matrix).sum()
            if bias is not None and replicated:
                inner += (bias * layer.module.bias.grad).sum()
        if mpu.get_model_parallel_world_size() > 1:
            dist.all_reduce(inner, group=mpu.get_model_parallel_group())
        nu = torch.clamp(torch.sqrt(self.kl_clip / (inner.abs() * lr ** 2)), max=1.0)  # 1 where inner is 0
        for layer, (_, preconditioned, bias) in zip(self.layers, results):
            layer.write(preconditioned, bias, nu)

    def _update_factors(self):
        layers = [layer for layer in self.layers if layer.sums is not None]
        if len(layers) < len(self.layers):  # a layer that ran no forward with gradients: nothing to add
            raise UsageError(f"--kfac: layer {next(x.name for x in self.layers if x.sums is None)} saw no "
                             "training forward pass in this iteration")
        sums = [s for layer in layers for side in layer.sums for s in side]
        flat = torch.cat([s.reshape(-1) for s in sums] + [torch.tensor([float(x.rows) for x in layers],
                                                                        device=sums[0].device)])
        if mpu.get_data_parallel_world_size() > 1:
            dist.all_reduce(flat, group=mpu.get_data_parallel_group())
        parts = iter(flat[:-len(layers)].split([s.numel() for s in sums]))
        rows = flat[-len(layers):]
        if not bool(torch.isfinite(flat).all()):  # a non-finite step (skipped by the optimizer) teaches nothing
            print_rank_0(f"K-FAC: non-finite factors at step {self.steps}; kept the previous ones")
        else:
            for layer, count in zip(layers, rows):
                new = [[next(parts).view(n, n) / count for n in sizes] for sizes in (layer.a_sizes, layer.g_sizes)]
                if layer.factors is None:
                    layer.factors = new
                else:
                    for olds, news in zip(layer.factors, new):
                        for old, fresh in zip(olds, news):
                            old.mul_(self.decay).add_(fresh, alpha=1.0 - self.decay)
        for layer in layers:
            layer.sums = None

    def _update_eigen(self):
        """Each factor decomposed on one data-parallel rank (the largest first, to the least loaded rank),
        then every rank's results broadcast from it."""
        factors = [(i, side, b, f) for i, layer in enumerate(self.layers) for side, blocks in enumerate(layer.factors)
                   for b, f in enumerate(blocks)]
        dp, me = mpu.get_data_parallel_world_size(), mpu.get_data_parallel_rank()
        load, owner = [0.0] * dp, {}
        for key in sorted(factors, key=lambda item: -item[3].size(0)):
            rank = min(range(dp), key=load.__getitem__)
            owner[key[:3]] = rank
            load[rank] += key[3].size(0) ** 3
        results = {}
        for i, side, b, factor in factors:
            n = factor.size(0)
            results[i, side, b] = eigen(factor) if owner[i, side, b] == me else \
                (factor.new_empty(n, n), factor.new_empty(n))
        if dp > 1:
            for rank in range(dp):
                mine = [t for key in sorted(results) if owner[key] == rank for t in results[key]]
                if not mine:
                    continue
                flat = torch.cat([t.reshape(-1) for t in mine])
                dist.broadcast(flat, dist.get_global_rank(mpu.get_data_parallel_group(), rank),
                               group=mpu.get_data_parallel_group())
                for t, part in zip(mine, flat.split([t.numel() for t in mine])):
                    t.copy_(part.view_as(t))
        for i, layer in enumerate(self.layers):
            layer.eigen = [[results[i, side, b] for b in range(len(blocks))] for side, blocks in enumerate(layer.factors)]

    # checkpoints

    def layout(self):
        return {"tensor_parallel": mpu.get_model_parallel_world_size(), "tensor_blocks": self.tensor_blocks,
                "layers": [layer.name for layer in self.layers]}

    def save(self, folder):
        """Data-parallel rank 0 of each tensor rank writes the factors and decompositions into `folder`."""
        if mpu.get_data_parallel_rank() != 0:
            return
        from checkpointing.tags import torch_save_atomically
        state = {"layout": self.layout(), "steps": self.steps,
                 "factors": [layer.factors for layer in self.layers], "eigen": [layer.eigen for layer in self.layers]}
        torch_save_atomically(state, os.path.join(folder, STATE_FILE.format(mpu.get_model_parallel_rank())))

    def load(self, folder, iteration):
        """Resume the factors saved in `folder`; saved at another layout (or not saved), start them again at
        the next iteration and say so."""
        path = os.path.join(folder, STATE_FILE.format(mpu.get_model_parallel_rank()))
        state = torch.load(path, map_location="cpu", weights_only=True) if os.path.isfile(path) else None
        self.steps = iteration
        if state is None or state["layout"] != self.layout():
            why = "holds no K-FAC factors" if state is None else \
                f"has K-FAC factors of {_describe(state['layout'])}, this run is {_describe(self.layout())}"
            print_rank_0(f"K-FAC: checkpoint {folder} {why}: they are recomputed at the next iteration")
            self.fresh = True
            return
        device = self.layers[0].module.weight.device
        self.steps, self.fresh = state["steps"], False
        for layer, factors, eigens in zip(self.layers, state["factors"], state["eigen"]):
            layer.factors = None if factors is None else [[f.to(device) for f in side] for side in factors]
            layer.eigen = None if eigens is None else [[tuple(t.to(device) for t in e) for e in side]
                                                       for side in eigens]


def _describe(layout):
    return f"tensor parallel {layout['tensor_parallel']} in {layout['tensor_blocks']} blocks over " \
           f"{len(layout['layers'])} layers"


def chosen_layers(model, skip):
    """(name, module) of every mpu linear layer inside a transformer layer, but experts and any whose name
    matches a --kfac-skip-layers pattern (a regular expression searched in the name)."""
    patterns = [re.compile(p) for p in skip or ()]
    chosen = []
    for prefix, block in model.named_modules():
        if not isinstance(block, ParallelTransformerLayer):
            continue
        for name, module in block.named_modules(prefix=prefix):
            linear = isinstance(module, mpu.RowParallelLinear) or \
                (isinstance(module, mpu.ColumnParallelLinear) and not module.gather_output)
            if linear and not is_moe_param(module.weight) and not any(p.search(name) for p in patterns):
                chosen.append((name, module))
    return chosen


def check_kfac_layout(args, zero_stage, overlap_comm):
    """One line for a layout K-FAC does not take (see the module's docstring), or None."""
    if args.pipe_parallel_size > 1:
        return ("--kfac with --pipe-parallel-size: the pipeline engine runs backward and the optimizer step inside "
                "train_batch, with no place for the preconditioner between them; train without stages")
    if zero_stage >= 2:
        return (f"--kfac with ZeRO-{zero_stage}: gradients are reduce-scattered into partitions during backward, so "
                "no rank holds a layer's whole gradient when the preconditioner runs; use ZeRO-0 or ZeRO-1")
    if zero_stage == 1 and overlap_comm:
        return ("--kfac with ZeRO-1 and overlap_comm: gradients are reduced into partitions during backward; set "
                "zero_optimization.overlap_comm to false in the ds_config (its default at ZeRO-1)")
    if args.fp16 or args.bf16_weights:
        given = "--bf16-weights" if args.bf16_weights else \
            "--mixed_precision fp16 (--fp16)" if args.mixed_precision == "fp16" else "--fp16"
        return (f"--kfac with {given}: the preconditioner works on the gradients of fp32 weights, and fp16 and bf16 "
                "weights keep theirs in their own precision and scale; use --bf16 (--mixed_precision bf16: fp32 "
                "weights under bf16 autocast) or fp32")
    blocks, tp = args.kfac_tensor_blocks, args.model_parallel_size
    if blocks and (blocks < 1 or (tp > 1 and blocks != tp)):
        return (f"--kfac-tensor-blocks {blocks}: at --model-parallel-size {tp} the factors split as the tensor ranks "
                "do; give the tensor-parallel size (another number of blocks only at --model-parallel-size 1)")
    if not 0.0 <= args.kfac_factor_decay < 1.0 or args.kfac_damping <= 0 or args.kfac_kl_clip <= 0 or \
            args.kfac_factor_update_steps < 1 or args.kfac_inv_update_steps < 1:
        return ("--kfac: --kfac-factor-decay is in [0, 1), --kfac-damping and --kfac-kl-clip are positive, the update "
                "steps at least 1")
    return None


def kfac_cost_line(kfac):
    sizes = [n for layer in kfac.layers for sizes in (layer.a_sizes, layer.g_sizes) for n in sizes]
    return (f"> K-FAC on {len(kfac.layers)} layers ({len(sizes)} factors, largest {max(sizes)} x {max(sizes)}, "
            f"{sum(n * n for n in sizes) * 8 / 2 ** 20:.1f} MiB with their eigenvectors); factors every "
            f"{kfac.factor_steps}, eigendecompositions every {kfac.inverse_steps} iterations, damping {kfac.damping}, "
            f"KL clip {kfac.kl_clip}" + (f", tensor blocks {kfac.tensor_blocks}" if kfac.tensor_blocks > 1 else ""))

