"""K-FAC (kfac.py): one preconditioned gradient against the Kronecker-factored Fisher solved by hand, the
same losses on every layout it takes, an exact resume, and one line for the layouts it does not take."""

import json
import types

import pytest
import torch

from distributed import run_distributed
from gpt2_runs import ITERS, expect_error, train, train_argv

DAMPING, KL_CLIP, LR = 0.01, 1e-5, 0.1


def _block_mask(size, blocks, stride):
    """[size, size] True where two positions fall in the same tensor rank's block (mpu's strided split)."""
    owner = (torch.arange(size) // (size // (blocks * stride))) % blocks
    return owner[:, None] == owner[None, :]


def _by_hand(recorded, grads, tensor_blocks):
    """(A (x) G + damping)^-1 of each layer's gradient in float64 by a dense solve of the Kronecker
    product, then the KL clip: {name: (weight gradient, bias gradient)}, and the clip factor."""
    results, inner = {}, 0.0
    for name, (x, g, module) in recorded.items():
        x, g = x.double(), g.double()
        weight, bias = (t.double() for t in grads[name])
        row = type(module).__name__ == "RowParallelLinear"
        if not row:
            x = torch.cat([x, torch.ones(x.size(0), 1, dtype=x.dtype)], dim=1)
        a, f = x.T @ x / x.size(0), g.T @ g / g.size(0)
        if tensor_blocks > 1 and row:
            a = a * _block_mask(a.size(0), tensor_blocks, 1)
        elif tensor_blocks > 1:
            f = f * _block_mask(f.size(0), tensor_blocks, module.weight.partition_stride)
        matrix = weight if row else torch.cat([weight, bias[:, None]], dim=1)
        fisher = torch.kron(f, a) + DAMPING * torch.eye(f.size(0) * a.size(0), dtype=f.dtype)
        solved = torch.linalg.solve(fisher, matrix.reshape(-1)).view_as(matrix)
        inner += float((solved * matrix).sum())
        if row:
            bias_solved = torch.linalg.solve(f + DAMPING * torch.eye(f.size(0), dtype=f.dtype), bias)
            inner += float((bias_solved * bias).sum())
            results[name] = (solved, bias_solved)
        else:
            results[name] = (solved[:, :-1], solved[:, -1])
    nu = min(1.0, (KL_CLIP / (LR ** 2 * inner)) ** 0.5)
    return {name: (w * nu, b * nu) for name, (w, b) in results.items()}, nu


def _one_preconditioned_gradient(tensor_blocks):
    import mpu
    from kfac import KFAC
    from model import GPT2Model
    mpu.initialize_model_parallel(1)
    torch.manual_seed(0)
    model = GPT2Model(num_layers=1, vocab_size=16, hidden_size=8, num_attention_heads=2, max_sequence_length=6,
                      embedding_dropout=0.0, attention_dropout=0.0, hidden_dropout=0.0, seed=3)
    settings = types.SimpleNamespace(kfac_factor_update_steps=1, kfac_inv_update_steps=1, kfac_damping=DAMPING,
                                     kfac_factor_decay=0.95, kfac_kl_clip=KL_CLIP, kfac_skip_layers=[],
                                     kfac_tensor_blocks=tensor_blocks)
    kfac = KFAC(model, settings)
    recorded = {}
    for layer in kfac.layers:
        def keep(module, inputs, output, name=layer.name):
            recorded[name] = [inputs[0].detach().reshape(-1, inputs[0].size(-1)), None, module]
            output.register_hook(lambda g: recorded[name].__setitem__(1, g.reshape(-1, g.size(-1))))
        layer.module.register_forward_hook(keep)
    generator = torch.Generator().manual_seed(5)
    tokens = torch.randint(0, 16, (3, 7), generator=generator)
    mask = (torch.rand(3, 6, generator=generator) > 0.3).float()  # a loss on some positions only
    loss_tokens = mask.sum()
    kfac.output_gradient_scale = loss_tokens  # per-token gradients: one process, no accumulation
    model(tokens[:, :-1], labels=(tokens[:, 1:], mask, loss_tokens)).backward()
    grads = {layer.name: (layer.module.weight.grad.clone(), layer.module.bias.grad.clone()) for layer in kfac.layers}
    for name in recorded:  # per-token output gradients, as the factor takes them
        recorded[name][1] = recorded[name][1] * loss_tokens
    expected, nu = _by_hand(recorded, grads, tensor_blocks)
    kfac.step(LR)
    got = {layer.name: (layer.module.weight.grad, layer.module.bias.grad) for layer in kfac.layers}
    return sorted(recorded), expected, got, nu


@pytest.mark.parametrize("tensor_blocks", [1, 2])
def test_one_preconditioned_gradient_is_the_damped_kronecker_solve_then_the_kl_clip(tensor_blocks):
    """Every layer (fused QKV with stride 3, attention output, MLP in and out), biases included; with
    --kfac-tensor-blocks 2 the factor of the split dimension is block-diagonal as two tensor ranks hold it."""
    ((names, expected, got, nu),) = run_distributed(1, _one_preconditioned_gradient, tensor_blocks)
    assert len(names) == 4 and nu < 1.0, (names, nu)  # the clip is exercised
    for name in names:
        for e, g in zip(expected[name], got[name]):
            scale = float(e.abs().max())
            assert float((g.double() - e).abs().max()) <= 1e-4 * scale, (name, g, e)


@pytest.fixture(scope="module")
def short_documents(tmp_path_factory, sample_texts):
    """Documents of 2 to 12 words with --eod-mask-loss: each micro-batch bears a different number of loss
    tokens, so per-token scaling of the output gradients and the averaging over ranks are both tested."""
    folder = tmp_path_factory.mktemp("kfac-data")
    corpus = folder / "short.jsonl"
    with open(corpus, "w") as f:
        for number, text in enumerate(sample_texts[:1500]):
            f.write(json.dumps({"text": " ".join(text.split()[:2 + number % 11])}) + "\n")
    return ("--train-data", str(corpus), "--data-cache-dir", str(folder / "cache"), "--eod-mask-loss")


KFAC = ("--kfac", "--kfac-factor-update-steps", "2", "--kfac-inv-update-steps", "4")


def _same(losses, reference, rtol=1e-4):
    assert len(losses) == len(reference) == ITERS
    for i, (got, expected) in enumerate(zip(losses, reference), start=1):
        assert abs(got - expected) <= rtol * abs(expected), f"iteration {i}: {got} != {expected}"


@pytest.mark.distributed
def test_kfac_gives_one_process_losses_at_zero_1_and_tensor_parallel(short_documents):
    """2 ranks ZeRO-0 (micro batch 4) and ZeRO-1 (micro batch 2 x accumulation 2), activation
    checkpointing, and TP=2 log one process's losses with K-FAC (factors every 2, decompositions every 4 iterations); K-FAC changes them."""
    (plain,) = run_distributed(1, train, train_argv(None, *short_documents))
    (one,) = run_distributed(1, train, train_argv(None, *short_documents, *KFAC))
    assert max(abs(a - b) for a, b in zip(plain[2:], one[2:])) > 1e-2, "K-FAC must change the steps"
    for zero, accumulation, micro in (("0", "1", 4), ("1", "2", 2)):
        for losses in run_distributed(2, train, train_argv(None, *short_documents, *KFAC, "--zero-stage", zero,
                                                           "--gradient-accumulation-steps", accumulation,
                                                           batch_size=micro)):
            _same(losses, one)
    (recomputed,) = run_distributed(1, train, train_argv(None, *short_documents, *KFAC, "--checkpoint-activations"))
    _same(recomputed, one)  # the hooks take each checkpointed layer once, in its recompute
    (blocks,) = run_distributed(1, train, train_argv(None, *short_documents, *KFAC, "--kfac-tensor-blocks", "2"))
    for losses in run_distributed(2, train, train_argv(None, *short_documents, *KFAC, "--model-parallel-size", "2")):
        _same(losses, blocks)


def test_layouts_kfac_does_not_take_stop_with_one_line(data_prefix):
    def error(*extra):
        return run_distributed(1, expect_error, train_argv(data_prefix, *extra))[0]
    assert "--kfac with ZeRO-2: gradients are reduce-scattered" in error("--kfac", "--zero-stage", "2")
    assert "--kfac with --bf16-weights: the preconditioner works on the gradients of fp32 weights" in error(
        "--kfac", "--bf16-weights")
    assert "--kfac-tensor-blocks 3: a dimension of 192 positions of transformer.layers.0.attention.query_key_value" in error("--kfac", "--kfac-tensor-blocks", "3")
    assert "--kfac-damping sets up K-FAC: add --kfac" in error("--kfac-damping", "0.1")


def _printed(argv):
    import contextlib
    import io
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        losses = train(argv)
    return losses, printed.getvalue()


@pytest.mark.distributed
def test_a_resume_with_kfac_is_the_unbroken_run(tmp_path, short_documents):
    """Dropout on; stopped after iteration 7 (between factor updates), the factors and decompositions come
    back from the checkpoint and every later loss is the unbroken run's; resumed at TP=2, they are recomputed
    and the run says so."""
    unbroken, stopped = str(tmp_path / "unbroken"), str(tmp_path / "stopped")

    def argv(*more):
        return train_argv(None, *short_documents, *KFAC, "--lr-decay-iters", str(ITERS), *more, dropout=0.1)
    (full,) = run_distributed(1, train, argv("--save", unbroken))
    (first,) = run_distributed(1, train, argv("--save", stopped, "--train-iters", "7"))
    ((second, printed),) = run_distributed(1, _printed, argv("--save", stopped, "--load", stopped))
    assert first + second == full, "a resumed K-FAC run must log the unbroken run's losses"
    assert "K-FAC: checkpoint" not in printed
    moved = run_distributed(2, _printed, argv("--load", stopped, "--ckpt-step", "7", "--model-parallel-size", "2"))
    assert "has K-FAC factors of tensor parallel 1 in 1 blocks over 8 layers, this run is tensor parallel 2 in 2 " \
           "blocks over 8 layers: they are recomputed at the next iteration" in moved[0][1]
    assert len(moved[0][0]) == ITERS - 7
