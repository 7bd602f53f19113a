"""Tensor-, pipeline- and data-parallel process groups.

Ranks are laid out as Megatron-LM and DeepSpeed's PipeModelDataParallelTopology lay them out:
tensor-parallel fastest, then data-parallel, then pipeline-parallel, so

    rank = pipeline_rank * (dp * tp) + data_rank * tp + tensor_rank

and the ranks of one tensor-parallel group are neighbours (one node, fast links).

"Model parallel" in the getters' names means tensor model parallel, as in Megatron-LM v1; the
`get_tensor_model_parallel_*` aliases are the names DeepSpeed looks for first when this module is
passed to `deepspeed.initialize(mpu=...)`.
"""

import torch.distributed as dist

_TENSOR_GROUP = None
_DATA_GROUP = None
_PIPELINE_GROUP = None
_SIZES = None  # (tensor, data, pipeline)


def _layout_ranks(tp, dp, pp):
    """Every group of each kind, as lists of global ranks, in the order all ranks create them."""
    def rank(p, d, t):
        return p * dp * tp + d * tp + t
    tensor = [[rank(p, d, t) for t in range(tp)] for p in range(pp) for d in range(dp)]
    data = [[rank(p, d, t) for d in range(dp)] for p in range(pp) for t in range(tp)]
    pipeline = [[rank(p, d, t) for p in range(pp)] for d in range(dp) for t in range(tp)]
    return tensor, data, pipeline


def _new_groups(all_ranks):
    """Create every group (each rank must take part in every new_group call); return this rank's."""
    mine = None
    for ranks in all_ranks:
        group = dist.new_group(ranks)
        if dist.get_rank() in ranks:
            mine = group
    return mine


def initialize_model_parallel(model_parallel_size=1, pipeline_parallel_size=1):
    """Split the world into tensor-, data- and pipeline-parallel groups.

    Call once on every rank after torch.distributed (or deepspeed.init_distributed) is initialized.
    The data-parallel size is what is left: world_size / (model_parallel_size * pipeline_parallel_size).
    """
    global _TENSOR_GROUP, _DATA_GROUP, _PIPELINE_GROUP, _SIZES
    if not dist.is_initialized():
        raise RuntimeError("torch.distributed is not initialized: call deepspeed.init_distributed() "
                           "before mpu.initialize_model_parallel()")
    if _SIZES is not None:
        raise RuntimeError("model parallel groups are already initialized; "
                           "call mpu.destroy_model_parallel() first to change them")
    for flag, size in (("--model-parallel-size", model_parallel_size),
                       ("--pipe-parallel-size", pipeline_parallel_size)):
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"{flag} must be a positive integer, got {size!r}")
    world_size = dist.get_world_size()
    model_ranks = model_parallel_size * pipeline_parallel_size
    if world_size % model_ranks != 0:
        raise ValueError(
            f"world size {world_size} is not divisible by --model-parallel-size {model_parallel_size} "
            f"x --pipe-parallel-size {pipeline_parallel_size} = {model_ranks}: launch a multiple of "
            f"{model_ranks} processes or choose sizes whose product divides {world_size}")
    data_parallel_size = world_size // model_ranks
    tensor, data, pipeline = _layout_ranks(model_parallel_size, data_parallel_size, pipeline_parallel_size)
    _TENSOR_GROUP = _new_groups(tensor)
    _DATA_GROUP = _new_groups(data)
    _PIPELINE_GROUP = _new_groups(pipeline)
    _SIZES = (model_parallel_size, data_parallel_size, pipeline_parallel_size)


def model_parallel_is_initialized():
    return _SIZES is not None


def destroy_model_parallel():
    """Forget the groups (for tests and re-initialization with other sizes)."""
    global _TENSOR_GROUP, _DATA_GROUP, _PIPELINE_GROUP, _SIZES
    _TENSOR_GROUP = _DATA_GROUP = _PIPELINE_GROUP = _SIZES = None


def _checked(group):
    if _SIZES is None:
        raise RuntimeError("model parallel groups are not initialized: "
                           "call mpu.initialize_model_parallel(...) first")
    return group


def get_model_parallel_group():
    """The tensor model-parallel group of this rank."""
    return _checked(_TENSOR_GROUP)


def get_model_parallel_world_size():
    return dist.get_world_size(group=get_model_parallel_group())


def get_model_parallel_rank():
    return dist.get_rank(group=get_model_parallel_group())


def get_model_parallel_src_rank():
    """Global rank of tensor-parallel rank 0 in this rank's group (tensor ranks are consecutive)."""
    return dist.get_rank() - get_model_parallel_rank()


def get_data_parallel_group():
    return _checked(_DATA_GROUP)


def get_data_parallel_world_size():
    return dist.get_world_size(group=get_data_parallel_group())


def get_data_parallel_rank():
    return dist.get_rank(group=get_data_parallel_group())


def get_data_parallel_group_ranks():
    return dist.get_process_group_ranks(get_data_parallel_group())


def get_pipeline_model_parallel_group():
    return _checked(_PIPELINE_GROUP)


def get_pipeline_model_parallel_world_size():
    return dist.get_world_size(group=get_pipeline_model_parallel_group())


def get_pipeline_model_parallel_rank():
    return dist.get_rank(group=get_pipeline_model_parallel_group())


get_tensor_model_parallel_group = get_model_parallel_group
get_tensor_model_parallel_world_size = get_model_parallel_world_size
get_tensor_model_parallel_rank = get_model_parallel_rank
get_tensor_model_parallel_src_rank = get_model_parallel_src_rank
