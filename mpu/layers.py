"""Tensor-parallel layers: each rank holds a slice of the weight and computes its part.

Weights are initialised from the full ("master") weight, drawn on the CPU from torch's default
generator and then sliced, so a model seeded the same way is the same model at any
tensor-parallel size. Partitioned parameters carry `tensor_model_parallel = True` (and the older
`model_parallel` name), `partition_dim` and `partition_stride`; DeepSpeed and `mpu.clip_grad_norm`
read them to count each weight once.
"""

import torch
import torch.nn.functional as F
from torch.nn import init

from .initialize import get_model_parallel_rank, get_model_parallel_world_size
from .mappings import (
    copy_to_model_parallel_region,
    gather_from_model_parallel_region,
    reduce_from_model_parallel_region,
    scatter_to_model_parallel_region,
)
from .utils import VocabUtility, divide


def set_tensor_model_parallel_attributes(param, partition_dim, stride=1):
    param.tensor_model_parallel = True
    param.model_parallel = True
    param.partition_dim = partition_dim
    param.partition_stride = stride


def _initialize_affine_weight(weight, master_shape, partition_dim, init_method, stride=1):
    """Fill `weight` with this rank's slice of a master weight made by `init_method`.

    With stride s the partitioned dimension is cut into s * world_size chunks and rank r takes
    chunks r, r + world_size, ...: a fused [q; k; v] projection (s = 3) gives each rank its own
    q, k and v heads.
    """
    master = torch.empty(master_shape, dtype=torch.float32)
    init_method(master)
    world_size = get_model_parallel_world_size()
    set_tensor_model_parallel_attributes(weight, partition_dim, stride)
    chunk = divide(master_shape[partition_dim], world_size * stride,
                   f"partitioned dimension of a {tuple(master_shape)} weight by "
                   f"tensor-parallel size {world_size} x stride {stride}")
    chunks = torch.split(master, chunk, dim=partition_dim)
    mine = torch.cat(chunks[get_model_parallel_rank()::world_size], dim=partition_dim)
    with torch.no_grad():
        weight.copy_(mine)


class VocabParallelEmbedding(torch.nn.Module):
    """Embedding whose vocabulary is split across tensor-parallel ranks.

    Each rank looks up the ids in its slice, zeros the others, and an all-reduce adds the slices.
    """

    def __init__(self, num_embeddings, embedding_dim, init_method=init.xavier_normal_,
                 params_dtype=torch.float32):
        super().__init__()
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.vocab_start_index, self.vocab_end_index = VocabUtility.vocab_range_from_global_vocab_size(
            num_embeddings, get_model_parallel_rank(), get_model_parallel_world_size())
        self.num_embeddings_per_partition = self.vocab_end_index - self.vocab_start_index
        self.weight = torch.nn.Parameter(
            torch.empty(self.num_embeddings_per_partition, embedding_dim, dtype=params_dtype))
        _initialize_affine_weight(self.weight, (num_embeddings, embedding_dim), 0, init_method)

    def forward(self, input_):
        if get_model_parallel_world_size() == 1:
            return F.embedding(input_, self.weight)
        outside = (input_ < self.vocab_start_index) | (input_ >= self.vocab_end_index)
        local_ids = (input_ - self.vocab_start_index).masked_fill(outside, 0)
        output = F.embedding(local_ids, self.weight).masked_fill(outside.unsqueeze(-1), 0.0)
        return reduce_from_model_parallel_region(output)


class ColumnParallelLinear(torch.nn.Module):
    """Y = XA + b with A split by columns (output features): rank i computes Y_i = X A_i + b_i.

    gather_output=True all-gathers Y; False leaves each rank its slice Y_i, ready for a
    RowParallelLinear(input_is_parallel=True).
    """

    def __init__(self, input_size, output_size, bias=True, gather_output=True,
                 init_method=init.xavier_normal_, stride=1, params_dtype=torch.float32):
        super().__init__()
        self.input_size = input_size
        self.output_size = output_size
        self.gather_output = gather_output
        self.output_size_per_partition = divide(
            output_size, get_model_parallel_world_size(),
            "ColumnParallelLinear output size by the tensor model-parallel size")
        self.weight = torch.nn.Parameter(
            torch.empty(self.output_size_per_partition, input_size, dtype=params_dtype))
        _initialize_affine_weight(self.weight, (output_size, input_size), 0, init_method, stride)
        if bias:
            self.bias = torch.nn.Parameter(torch.zeros(self.output_size_per_partition, dtype=params_dtype))
            set_tensor_model_parallel_attributes(self.bias, 0, stride)
        else:
            self.register_parameter("bias", None)

    def forward(self, input_):
        output = F.linear(copy_to_model_parallel_region(input_), self.weight, self.bias)
        return gather_from_model_parallel_region(output) if self.gather_output else output


class RowParallelLinear(torch.nn.Module):
    """Y = XA + b with A split by rows (input features): Y = sum_i X_i A_i + b.

    input_is_parallel=True takes X already split along its last dimension (the output of a
    ColumnParallelLinear(gather_output=False)); otherwise X is scattered here. The bias is
    replicated and added once, after the all-reduce.
    """

    def __init__(self, input_size, output_size, bias=True, input_is_parallel=False,
                 init_method=init.xavier_normal_, stride=1, params_dtype=torch.float32):
        super().__init__()
        self.input_size = input_size
        self.output_size = output_size
        self.input_is_parallel = input_is_parallel
        self.input_size_per_partition = divide(
            input_size, get_model_parallel_world_size(),
            "RowParallelLinear input size by the tensor model-parallel size")
        self.weight = torch.nn.Parameter(
            torch.empty(output_size, self.input_size_per_partition, dtype=params_dtype))
        _initialize_affine_weight(self.weight, (output_size, input_size), 1, init_method, stride)
        if bias:
            self.bias = torch.nn.Parameter(torch.zeros(output_size, dtype=params_dtype))
        else:
            self.register_parameter("bias", None)

    def forward(self, input_):
        input_parallel = input_ if self.input_is_parallel else scatter_to_model_parallel_region(input_)
        output = reduce_from_model_parallel_region(F.linear(input_parallel, self.weight))
        return output + self.bias if self.bias is not None else output
