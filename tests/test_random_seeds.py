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


def _replicated_weights_after_emulated_bf16_run(argv):
    """pretrain_bert on a CPU faked to lack native bf16 (so rank 0 alone measures the emulation's cost):
    the replicated (not tensor-partitioned) parameters this tensor rank holds after training."""
    import precision
    from gpt2_runs import train_keeping_engine
    native = precision.native_bf16
    precision.native_bf16 = lambda: False
    try:
        _, engine = train_keeping_engine(argv, "pretrain_bert")
    finally:
        precision.native_bf16 = native
    return {name: p.detach().float().clone() for name, p in engine.module.named_parameters()
            if not getattr(p, "tensor_model_parallel", False)}


def test_tensor_ranks_stay_alike_when_rank_0_measures_emulated_bf16(bert_small_prefix, bert_small_vocab_file):
    """--bf16 on a CPU without native bf16 makes rank 0 time a bf16 matmul at start-up; its random
    operands must not move rank 0's stream: BERT's replicated weights (built outside `seeded`) and the
    dropout masks on replicated activations stay the same on both tensor ranks, so after 4 steps with
    dropout every replicated parameter is bit-identical across them."""
    import os
    argv = ["--model-size", "tiny", "--seq-length", "64", "--batch-size", "4", "--train-iters", "4",
            "--log-interval", "1", "--eval-iters", "0", "--hidden-dropout", "0.1", "--attention-dropout", "0.1",
            "--max-preds-per-seq", "10", "--data-path", bert_small_prefix,
            "--data-cache-dir", os.path.dirname(bert_small_prefix), "--tokenizer-type", "BertWordPieceLowerCase",
            "--vocab-file", bert_small_vocab_file, "--bf16", "--model-parallel-size", "2"]
    first, second = run_distributed(2, _replicated_weights_after_emulated_bf16_run, argv)
    assert first.keys() == second.keys() and len(first) > 10
    different = [name for name in first if not torch.equal(first[name], second[name])]
    assert not different, f"replicated parameters differ between the tensor ranks: {different}"
