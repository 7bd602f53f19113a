"""Model-parallel RNG states and activation checkpointing that replays them.

Two random streams are kept on every rank:
  - the default generator, seeded alike on all tensor-parallel ranks of a data-parallel replica, for
    dropout on replicated activations (outside the tensor-parallel region);
  - a tracked "model-parallel" state, seeded differently on each tensor-parallel rank, entered with
    `get_cuda_rng_tracker().fork()`, for dropout on partitioned activations (e.g. attention probs).

`checkpoint(function, *args)` saves the CPU, device and tracked states at the forward and restores
them for the recomputation, so dropout draws the same masks twice.

The three entry points (`checkpoint`, `get_cuda_rng_tracker`, `model_parallel_cuda_manual_seed`) can
be routed to another implementation of the same interface, e.g. `deepspeed.checkpointing` for its
partitioned / CPU-offloaded activation checkpointing: `set_checkpointing_implementation(impl)`.
Layers must always call these through `mpu`, never keep a tracker of their own.
"""

import contextlib

import torch
from deepspeed.accelerator import get_accelerator

from .initialize import get_model_parallel_rank

MODEL_PARALLEL_RNG_TRACKER_NAME = "model-parallel-rng"
_MODEL_PARALLEL_SEED_OFFSET = 2718


class RNGStatesTracker:
    """Named device RNG states that can be entered and left with `fork(name)`."""

    def __init__(self):
        self.states_ = {}
        self.seeds_ = set()

    def reset(self):
        self.states_ = {}
        self.seeds_ = set()

    def get_states(self):
        return dict(self.states_)

    def set_states(self, states):
        self.states_ = dict(states)

    def add(self, name, seed):
        if seed in self.seeds_:
            raise ValueError(f"RNG seed {seed} is already tracked")
        if name in self.states_:
            raise ValueError(f"RNG state {name!r} is already tracked")
        self.seeds_.add(seed)
        accelerator = get_accelerator()
        original = accelerator.get_rng_state()
        accelerator.manual_seed(seed)
        self.states_[name] = accelerator.get_rng_state()
        accelerator.set_rng_state(original)

    @contextlib.contextmanager
    def fork(self, name=MODEL_PARALLEL_RNG_TRACKER_NAME):
        if name not in self.states_:
            raise KeyError(f"RNG state {name!r} is not tracked: call mpu.model_parallel_cuda_manual_seed(seed) first")
        accelerator = get_accelerator()
        original = accelerator.get_rng_state()
        accelerator.set_rng_state(self.states_[name])
        try:
            yield
        finally:
            self.states_[name] = accelerator.get_rng_state()
            accelerator.set_rng_state(original)


_TRACKER = RNGStatesTracker()
_IMPLEMENTATION = None


def set_checkpointing_implementation(implementation=None):
    """Route checkpoint, the RNG tracker and seeding to `implementation` (None: mpu's own).

    `implementation` offers `checkpoint`, `get_cuda_rng_tracker` and `model_parallel_cuda_manual_seed`,
    as `deepspeed.checkpointing` does once `deepspeed.checkpointing.configure(mpu, ...)` has run.
    """
    global _IMPLEMENTATION
    _IMPLEMENTATION = implementation


def get_cuda_rng_tracker():
    """The model-parallel RNG tracker (Megatron's name; it tracks the accelerator's RNG, CPU included)."""
    if _IMPLEMENTATION is not None:
        return _IMPLEMENTATION.get_cuda_rng_tracker()
    return _TRACKER


get_rng_tracker = get_cuda_rng_tracker


def model_parallel_cuda_manual_seed(seed):
    """Seed the default generator with `seed` and the tracked state with a per-tensor-rank seed.

    Call after mpu.initialize_model_parallel, on every rank, with the same `seed`.
    """
    if _IMPLEMENTATION is not None:
        return _IMPLEMENTATION.model_parallel_cuda_manual_seed(seed)
    get_accelerator().manual_seed(seed)
    _TRACKER.reset()
    _TRACKER.add(MODEL_PARALLEL_RNG_TRACKER_NAME, seed + _MODEL_PARALLEL_SEED_OFFSET + get_model_parallel_rank())


model_parallel_manual_seed = model_parallel_cuda_manual_seed


def _rng_snapshot():
    return torch.get_rng_state(), get_accelerator().get_rng_state(), get_cuda_rng_tracker().get_states()


def _restore_rng(snapshot):
    cpu_state, device_state, tracker_states = snapshot
    torch.set_rng_state(cpu_state)
    get_accelerator().set_rng_state(device_state)
    get_cuda_rng_tracker().set_states(tracker_states)


class _CheckpointFunction(torch.autograd.Function):
    """Run forward without keeping activations; recompute them, with the same RNG, in backward."""

    @staticmethod
    def forward(ctx, run_function, *args):
        ctx.run_function = run_function
        ctx.rng = _rng_snapshot()
        ctx.tensor_positions = [i for i, a in enumerate(args) if torch.is_tensor(a)]
        ctx.args = [None if torch.is_tensor(a) else a for a in args]
        ctx.save_for_backward(*(args[i] for i in ctx.tensor_positions))
        with torch.no_grad():
            return run_function(*args)

    @staticmethod
    def backward(ctx, *grad_outputs):
        args = list(ctx.args)
        for position, tensor in zip(ctx.tensor_positions, ctx.saved_tensors):
            args[position] = tensor.detach().requires_grad_(tensor.requires_grad)
        now = _rng_snapshot()
        _restore_rng(ctx.rng)
        try:
            with torch.enable_grad():
                outputs = ctx.run_function(*args)
        finally:
            _restore_rng(now)
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        pairs = [(o, g) for o, g in zip(outputs, grad_outputs) if torch.is_tensor(o) and o.requires_grad]
        torch.autograd.backward([o for o, _ in pairs], [g for _, g in pairs])
        return (None,) + tuple(a.grad if torch.is_tensor(a) else None for a in args)


def checkpoint(function, *args):
    """Activation checkpointing of `function(*args)` that replays every RNG stream in the recompute."""
    if _IMPLEMENTATION is not None:
        return _IMPLEMENTATION.checkpoint(function, *args)
    return _CheckpointFunction.apply(function, *args)
