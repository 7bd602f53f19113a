"""Dropout streams per rank (initialize.set_random_seed): pipeline stages draw different masks, tensor-
parallel ranks of a stage draw the same masks on replicated activations and different ones on
partitioned activations, data-parallel replicas draw alike (Megatron-LM's seeding)."""

import torch
import torch.distributed as dist

from distributed import run_distributed


def _masks_body():
    import mpu
    from initialize import set_random_seed
    mpu.initialize_model_parallel(2, 2)  # 4 ranks: tensor-parallel pairs (0, 1) and (2, 3), stages 0 and 1
    set_random_seed(1234)
    replicated = torch.nn.functional.dropout(torch.ones(4096), 0.5) > 0
    with mpu.get_cuda_rng_tracker().fork():
        partitioned = torch.nn.functional.dropout(torch.ones(4096), 0.5) > 0
    masks = [torch.zeros(2, 4096, dtype=torch.bool) for _ in range(dist.get_world_size())]
    dist.all_gather(masks, torch.stack([replicated, partitioned]))
    return masks, mpu.get_pipeline_model_parallel_rank(), mpu.get_model_parallel_rank()


def test_stages_and_tensor_ranks_draw_their_own_masks():
    masks, stage, tensor_rank = run_distributed(4, _masks_body)[0]
    assert (stage, tensor_rank) == (0, 0)
    (r0, p0), (r1, p1), (r2, p2), (r3, p3) = [tuple(m) for m in masks]
    assert torch.equal(r0, r1) and torch.equal(r2, r3), "tensor-parallel ranks of a stage: same replicated masks"
    assert not torch.equal(r0, r2), "the stages draw different masks"
    assert not torch.equal(p0, p1) and not torch.equal(p2, p3), "partitioned activations: one stream per tensor rank"
    assert len({tuple(p.tolist()) for p in (p0, p1, p2, p3)}) == 4
