"""Distributed start-up and the random streams, shared by training, evaluation and generation."""

import os
import random
import socket

import deepspeed
import numpy as np
import torch
import torch.distributed as dist
from deepspeed.accelerator import get_accelerator

import mpu

# Megatron's rule: each pipeline stage draws dropout from its own streams (seed + 100 x stage).
PIPELINE_SEED_STRIDE = 100


class UsageError(Exception):
    """A problem with the flags, config, data or checkpoint that the user must fix: printed as one line."""


def print_rank_0(message):
    if not dist.is_initialized() or dist.get_rank() == 0:
        print(message, flush=True)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def initialize_distributed(args):
    """torch.distributed through DeepSpeed, then the model-parallel groups.

    A plain `python pretrain_gpt2.py` is one rank: the variables a launcher would set are set here, so
    DeepSpeed does not go looking for MPI.
    """
    if "WORLD_SIZE" not in os.environ:
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=os.environ.get("MASTER_PORT", str(_free_port())))
    args.local_rank = int(os.environ.get("LOCAL_RANK", args.local_rank or 0))
    accelerator = get_accelerator()
    if accelerator.device_name() != "cpu":
        accelerator.set_device(args.local_rank)
    if accelerator.device_name() == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE",
                                                                              os.environ["WORLD_SIZE"]))))
    deepspeed.init_distributed(dist_backend=args.distributed_backend or accelerator.communication_backend_name())
    try:
        mpu.initialize_model_parallel(args.model_parallel_size, args.pipe_parallel_size)
    except ValueError as error:
        raise UsageError(str(error)) from None


def dropout_seed(seed):
    """The seed of this rank's dropout streams: `seed` offset by the pipeline stage, so stages do not
    draw identical masks (the tensor-parallel stream adds the tensor rank on top, in mpu). Weights do
    not depend on it: models build each part under seed + part index (model.transformer.seeded)."""
    return seed + PIPELINE_SEED_STRIDE * mpu.get_pipeline_model_parallel_rank()


def set_random_seed(seed):
    """Seed python, numpy, torch and the model-parallel tracker for this rank (see dropout_seed)."""
    seed = dropout_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    mpu.model_parallel_cuda_manual_seed(seed)


def rng_state():
    """Every random stream of this rank, to save with a checkpoint."""
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "device": get_accelerator().get_rng_state(), "tracker": mpu.get_cuda_rng_tracker().get_states()}


def set_rng_state(state):
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    get_accelerator().set_rng_state(state["device"])
    mpu.get_cuda_rng_tracker().set_states(state["tracker"])
