"""FlexAttention's sliding-window local attention (what a GPU runs) against the blocked computation
(what a CPU runs, and what local attention computed before), on the CPU: FlexAttention runs eagerly
here and forward only (torch has no CPU backward for it), so these compare outputs and losses; the
GPU check script (scripts/check_gpu.sh) compares training on a GPU."""

import warnings

import pytest
import torch

import mpu
from distributed import run_distributed
from model import sliding_window
from model.architecture import Architecture
from model.transformer import blocked_local_attention


@pytest.fixture(autouse=True)
def _quiet_eager_flex():
    with warnings.catch_warnings():  # "flex_attention called without torch.compile()": on purpose here
        warnings.simplefilter("ignore")
        yield


@pytest.mark.parametrize("seq, window, scale", [(300, 16, None), (37, 5, 1.0), (256, 256, None), (130, 64, 0.3)])
def test_flex_local_attention_equals_the_blocked_computation(seq, window, scale):
    """Sequences that are no multiple of the window nor of FlexAttention's 128-position blocks."""
    generator = torch.Generator().manual_seed(seq)
    q, k, v = (torch.randn(2, 3, seq, 16, generator=generator) for _ in range(3))
    blocked = blocked_local_attention(q, k, v, window, scale=scale)
    flex = sliding_window.flex_local_attention(q, k, v, window, scale)
    torch.testing.assert_close(flex, blocked, rtol=1e-5, atol=1e-5)


def _losses_blocked_and_flex():
    """An all-local GPT-Neo-style model's loss (window 12, 90 positions), blocked and through FlexAttention."""
    from model import GPT2Model
    mpu.initialize_model_parallel(1)
    model = GPT2Model(num_layers=2, vocab_size=64, hidden_size=32, num_attention_heads=4, max_sequence_length=96,
                      embedding_dropout=0.0, attention_dropout=0.0, hidden_dropout=0.0, seed=4,
                      architecture=Architecture(attention_types=("local",), attention_window=12)).eval()
    tokens = torch.randint(0, 64, (3, 91), generator=torch.Generator().manual_seed(1))
    labels = (tokens[:, 1:], torch.ones_like(tokens[:, 1:]), tokens[:, 1:].numel())
    calls, on_gpu_only = [], sliding_window.flex_runs_local_attention
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        blocked = model(tokens[:, :-1], labels=labels)
        sliding_window.flex_runs_local_attention = lambda q, dropout: calls.append(q) or True
        try:
            flex = model(tokens[:, :-1], labels=labels)
        finally:
            sliding_window.flex_runs_local_attention = on_gpu_only
    return blocked, flex, len(calls)


def test_an_all_local_model_has_the_same_loss_with_flex_attention():
    ((blocked, flex, calls),) = run_distributed(1, _losses_blocked_and_flex)
    assert calls == 2, "both layers went through FlexAttention"
    torch.testing.assert_close(flex, blocked, rtol=1e-6, atol=0)
