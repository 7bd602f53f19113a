"""The launch scripts as users run them: real launchers, real processes, the log as users read it."""

import json
import os
import re
import signal
import subprocess
import sys

import pytest

from initialize import arch_list_for_deepspeed, free_port

pytestmark = pytest.mark.distributed  # multi-rank training runs: left out of `pytest -m "not distributed"`

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOG_LINE = re.compile(r" iteration +\d+/ +\d+ \| consumed samples: +\d+ \| elapsed time per iteration \(ms\): [\d.]+ \| "
                      r"learning rate: [\d.]+E[+-]\d+ \| lm loss: \d\.\d{6}E[+-]\d\d \| loss scale: [\d.]+ \| "
                      r"grad norm: [\d.]+ \| tokens per second: [\d.]+ \| TFLOP/s per device: [\d.]+ \|")


def _script(name, env, *flags):
    path = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")  # this venv's launchers
    environment = {**os.environ, "PATH": path, "OMP_NUM_THREADS": "1", **env}
    return subprocess.run(["bash", os.path.join(REPO, "scripts", name), *flags], capture_output=True, text=True,
                          env=environment, cwd=REPO, timeout=600)


def test_deepspeed_launcher_two_ranks_zero2_bf16(tmp_path, data_prefix):
    checkpoints = tmp_path / "checkpoints"
    result = _script("ds_pretrain_gpt2.sh",
                     {"NUM_GPUS": "2", "TRAIN_ITERS": "4", "NUM_LAYERS": "2", "HIDDEN_SIZE": "64", "SEQ_LENGTH": "32",
                      "BATCH_SIZE": "2", "CHECKPOINT_DIR": str(checkpoints), "MASTER_PORT": str(free_port()),
                      "DS_CONFIG": "ds_configs/ds_zero2_bf16.json"},
                     "--data-path", data_prefix,
               "--tokenizer-type", "CharacterLevelTokenizer",       "--data-cache-dir", str(tmp_path), "--log-interval", "2",
                     "--eval-interval", "2", "--eval-iters", "1", "--tensorboard-dir", str(tmp_path / "runs"))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert len(LOG_LINE.findall(output)) == 2, output[-4000:]
    assert "validation loss at iteration 2 | lm loss value:" in output and "lm loss PPL:" in output
    assert "data parallel 2" in output and "ZeRO stage 2, fp32 weights, bfloat16 autocast" in output
    assert (checkpoints / "latest").read_text().strip() == "global_step4"
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(tmp_path / "runs"))
    # the checkpoint of two data-parallel ranks generates at two tensor-parallel ranks as in one process
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("The hacker ethic\n\n")
    outputs = {}
    for mp_size in ("1", "2"):
        outputs[mp_size] = tmp_path / f"samples-{mp_size}.jsonl"
        result = _script("generate_text.sh", {"MP_SIZE": mp_size, "GREEDY": "1", "OUT_SEQ_LENGTH": "8",
                                              "CHECKPOINT_DIR": str(checkpoints), "MASTER_PORT": str(free_port())},
                         "--sample-input-file", str(prompts), "--sample-output-file", str(outputs[mp_size]))
        assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    samples = [[json.loads(line) for line in outputs[size].read_text().splitlines()] for size in ("1", "2")]
    assert samples[0] == samples[1] and [s["prompt"] for s in samples[0]] == ["The hacker ethic", ""]
    assert all(len(s["tokens"]) <= 8 for s in samples[0])


def test_fp16_on_cpu_is_one_clear_line(tmp_path):
    result = subprocess.run([sys.executable, os.path.join(REPO, "pretrain_gpt2.py"), "--fp16", "--model-size", "tiny",
                             "--data-cache-dir", str(tmp_path)], capture_output=True, text=True, cwd=REPO)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert errors == ["error: --fp16: DeepSpeed does not support fp16 on the CPU accelerator (\"Type fp16 is not "
                      "supported on your device\"); use --bf16 on CPU, or run on a GPU"]


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path, data_prefix):
    checkpoints = tmp_path / "checkpoints"
    command = [sys.executable, os.path.join(REPO, "pretrain_gpt2.py"), "--model-size", "tiny", "--seq-length", "32",
               "--train-iters", "100000", "--log-interval", "1", "--eval-iters", "0", "--data-path", data_prefix,
               "--tokenizer-type", "CharacterLevelTokenizer", "--data-cache-dir", str(tmp_path), "--save", str(checkpoints)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    lines = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith(" iteration "):
            process.send_signal(signal.SIGTERM)
            break
    output = "".join(lines) + process.communicate(timeout=300)[0]
    assert process.returncode == 0, output[-3000:]
    stopped = re.search(r"exiting at iteration (\d+) \(SIGTERM\)", output)
    assert stopped, output[-3000:]
    assert (checkpoints / "latest").read_text().strip() == f"global_step{stopped.group(1)}"


def test_arch_list_suffixes_are_dropped_for_deepspeeds_op_builder(monkeypatch):
    """Hopper images set TORCH_CUDA_ARCH_LIST="9.0a"; DeepSpeed 0.19 parses each part as an integer (seen
    failing on an H200: "invalid literal for int() with base 10: '0a'" at fused Adam's first build)."""
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "8.0 9.0a 9.0+PTX 10.0f")
    listed = arch_list_for_deepspeed()
    assert listed == "8.0 9.0 9.0+PTX 10.0"
    assert [tuple(int(part.split("+")[0]) for part in cc.split(".")) for cc in listed.split()] == \
        [(8, 0), (9, 0), (9, 0), (10, 0)]


def test_emulated_bf16_is_one_warning_with_this_machines_ratio(monkeypatch):
    """On a CPU without native bf16 (faked here: this one may have it), --bf16 gets one line with the
    measured matmul ratio; with native bf16, on a GPU, or in fp32, nothing."""
    import precision
    monkeypatch.setattr(precision, "native_bf16", lambda: False)
    warning = precision.emulated_bf16_warning(bf16=True, on_cpu=True)
    assert re.fullmatch(r"warning: --bf16 on a CPU without native bf16: torch emulates it, and a bf16 matmul runs "
                        r"\d+\.\dx the time of an fp32 one here; .*ds_configs/ds_zero2\.json\)", warning), warning
    assert precision.emulated_bf16_warning(bf16=False, on_cpu=True) is None
    assert precision.emulated_bf16_warning(bf16=True, on_cpu=False) is None
    monkeypatch.setattr(precision, "native_bf16", lambda: True)
    assert precision.emulated_bf16_warning(bf16=True, on_cpu=True) is None


def test_gpu_benchmark_rows_parse_in_a_dry_run():
    """scripts/benchmark_gpu.sh --dry-run checks every run's flags on any machine; SIZES, SEQS and MICRO narrow
    the sweep (each grid point runs with and without activation checkpointing)."""
    result = _script("benchmark_gpu.sh", {}, "--dry-run")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line for line in result.stdout.splitlines() if "flags ok: pretrain_gpt2.py" in line]
    assert len(rows) == 2 * 2 * 2 * 4 + 2 + 5 + 2, result.stdout
    assert any("--compile" in row for row in rows) and any("--fp16" in row for row in rows) \
        and any("--bf16-weights" in row for row in rows) and any("--attention-types local" in row for row in rows)
    assert all("--bf16" in row.split() or "--fp16" in row.split() or "--bf16-weights" in row.split() for row in rows)
    picked = _script("benchmark_gpu.sh", {"SIZES": "gpt2-350m", "SEQS": "1024", "MICRO": "8"}, "--dry-run")
    assert picked.returncode == 0 and picked.stdout.count("flags ok") == 2 + 1 + 5 + 2, picked.stdout
