"""bf16 on a CPU without native bf16 instructions: torch emulates it and every matmul gets many times
slower than fp32 (measured on an AVX2-only CPU: a ZeRO-2 bf16 step 11.2 s against 0.96 s in fp32). Training
says so once at start-up, with this machine's own ratio, rather than running slowly without a word."""

import time

import torch


def native_bf16():
    """Whether this CPU runs bf16 matmuls natively (oneDNN's check: AVX-512 BF16 or AMX)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def matmul_slowdown(size=256, repeats=5):
    """bf16 matmul time over fp32's on this CPU (best of `repeats`). Draws from a generator of its own:
    one rank measures, and torch's global stream must stay where the seed put it on every rank."""
    generator = torch.Generator().manual_seed(0)

    def best(dtype):
        a, b = (torch.randn(size, size, generator=generator).to(dtype) for _ in range(2))
        a @ b
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - started)
        return min(times)
    return best(torch.bfloat16) / best(torch.float32)


def emulated_bf16_warning(bf16, on_cpu):
    """The one-line warning for --bf16 on a CPU that emulates it, or None."""
    if not (bf16 and on_cpu) or native_bf16():
        return None
    return (f"warning: --bf16 on a CPU without native bf16: torch emulates it, and a bf16 matmul runs "
            f"{matmul_slowdown():.1f}x the time of an fp32 one here; train in fp32 on this machine (drop --bf16, "
            "or a ds_config with bf16 \"auto\" such as ds_configs/ds_zero2.json)")
