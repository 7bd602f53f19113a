"""Small helpers shared by the tensor-parallel layers."""

import torch


def ensure_divisibility(numerator, denominator, what="value"):
    """Raise a clear error unless `denominator` divides `numerator`."""
    if denominator <= 0 or numerator % denominator != 0:
        raise ValueError(f"{what}: {numerator} is not divisible by {denominator}")


def divide(numerator, denominator, what="value"):
    """Exact integer division; an error naming `what` if it does not divide."""
    ensure_divisibility(numerator, denominator, what)
    return numerator // denominator


def split_tensor_along_last_dim(tensor, num_partitions, contiguous_split_chunks=False):
    """Split `tensor` into `num_partitions` equal chunks along its last dimension."""
    last_dim_size = divide(tensor.size(-1), num_partitions, "last dimension of the tensor")
    chunks = torch.split(tensor, last_dim_size, dim=-1)
    if contiguous_split_chunks:
        return tuple(chunk.contiguous() for chunk in chunks)
    return chunks


class VocabUtility:
    """The contiguous slice [first, last) of the vocabulary that one tensor-parallel rank owns."""

    @staticmethod
    def vocab_range_from_per_partition_vocab_size(per_partition_vocab_size, rank, world_size):
        first = rank * per_partition_vocab_size
        return first, first + per_partition_vocab_size

    @staticmethod
    def vocab_range_from_global_vocab_size(global_vocab_size, rank, world_size):
        per_partition = divide(global_vocab_size, world_size,
                               "vocabulary size by the tensor model-parallel size "
                               "(pad the vocabulary with --make-vocab-size-divisible-by)")
        return VocabUtility.vocab_range_from_per_partition_vocab_size(per_partition, rank, world_size)
