"""Which samples each data-parallel rank reads, resumable at any iteration."""


class DistributedBatchSampler:
    """Micro batches of one data-parallel rank over samples 0 .. num_samples - 1, in order.

    Step s covers the global micro batch [C + s * B * W, C + (s + 1) * B * W) (C = consumed_samples,
    B = micro_batch_size, W = world_size, the data-parallel size) and rank r takes its B consecutive
    samples. The datasets are already shuffled, so order here is plain. consumed_samples skips samples
    arithmetically (none are read), so a run resumed after C samples reads what an unbroken run reads
    after C, whatever its micro batch, data-parallel size or accumulation. A last partial global batch
    is dropped unless drop_last=False, when each rank gets its share of what is left.
    """

    def __init__(self, num_samples, micro_batch_size, rank, world_size, consumed_samples=0, drop_last=True):
        if micro_batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"batch sampler: micro batch size {micro_batch_size}, rank {rank} of {world_size} "
                             "is not a valid layout")
        self.num_samples, self.micro_batch_size = num_samples, micro_batch_size
        self.rank, self.world_size = rank, world_size
        self.consumed_samples, self.drop_last = consumed_samples, drop_last

    @property
    def global_batch(self):
        return self.micro_batch_size * self.world_size

    def __len__(self):
        full, rest = divmod(max(self.num_samples - self.consumed_samples, 0), self.global_batch)
        return full if self.drop_last or rest == 0 else full + 1

    def __iter__(self):
        for step in range(len(self)):
            start = self.consumed_samples + step * self.global_batch
            end = min(start + self.global_batch, self.num_samples)
            share = -(-(end - start) // self.world_size)
            first = start + self.rank * share
            batch = list(range(first, min(first + share, end)))
            if batch:
                yield batch
