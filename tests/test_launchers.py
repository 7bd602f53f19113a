"""The launch scripts as users run them: real launchers, real processes, the log as users read it."""

import os
import re
import signal
import subprocess
import sys

import pytest
from launches import REPO, dry_run, entry_argv, run_script, same_weights, script_environment, unbroken_weights

from checkpointing import read_checkpoint
from initialize import arch_list_for_deepspeed
from launch_environment import free_port

pytestmark = pytest.mark.distributed  # multi-rank training runs: left out of `pytest -m "not distributed"`

LOG_LINE = re.compile(r" iteration +\d+/ +\d+ \| consumed samples: +\d+ \| elapsed time per iteration \(ms\): [\d.]+ \| "
                      r"learning rate: [\d.]+E[+-]\d+ \| lm loss: \d\.\d{6}E[+-]\d\d \| loss scale: [\d.]+ \| "
                      r"grad norm: [\d.]+ \| tokens per second: [\d.]+ \| TFLOP/s per device: [\d.]+ \|")


def _launch_in_own_group(command, environment, stop_after, signal_to_send):
    """Start `command` as a job step is started (its own process group: launcher, ranks, loader workers),
    send `signal_to_send` to the whole group once `stop_after` of its output lines appeared, and return
    (return code, all its output)."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
                               env=environment, start_new_session=True)
    lines = []
    for line in process.stdout:
        lines.append(line)
        if len(LOG_LINE.findall("".join(lines))) >= stop_after:
            os.killpg(process.pid, signal_to_send)
            break
    return process.wait(timeout=300), "".join(lines) + process.stdout.read()


def _stopped_cleanly(output, signal_name, checkpoints, train_iters):
    """The ranks saw the signal, committed a checkpoint of the iteration they stopped at, and exited."""
    stopped = re.search(rf"exiting at iteration (\d+) \({signal_name}\)", output)
    assert stopped and int(stopped.group(1)) < train_iters, output[-4000:]
    assert "Traceback" not in output and "DataLoader worker" not in output, output[-4000:]
    assert (checkpoints / "latest").read_text().strip() == f"global_step{stopped.group(1)}"


def test_deepspeed_launcher_two_ranks_zero2(tmp_path, data_prefix):
    """scripts/ds_pretrain_gpt2.sh on 2 ranks, with dropout: SIGTERM to its whole process group (the launcher,
    both ranks, their loader workers, as Slurm's scancel sends it) commits a checkpoint and exits; resumed
    on 2 ranks (the test's pool: a second launch would only repeat the first) it ends with the weights of an
    unbroken run (in fp32: a bf16-autocast reference trained on the pool's ranks once differed from the
    launched run in the fourth decimal inside the whole suite, never alone)."""
    from distributed import run_distributed
    from gpt2_runs import train
    checkpoints, train_iters = tmp_path / "checkpoints", 20
    env = {"NUM_GPUS": "2", "TRAIN_ITERS": str(train_iters), "NUM_LAYERS": "2", "HIDDEN_SIZE": "64",
           "SEQ_LENGTH": "32", "BATCH_SIZE": "2", "CHECKPOINT_DIR": str(checkpoints), "MASTER_PORT": str(free_port()),
           "DS_CONFIG": os.path.join(REPO, "ds_configs", "ds_zero2.json")}
    flags = ["--data-path", data_prefix, "--tokenizer-type", "CharacterLevelTokenizer", "--data-cache-dir",
             str(tmp_path), "--log-interval", "2", "--eval-interval", "2", "--eval-iters", "1",
             "--tensorboard-dir", str(tmp_path / "runs")]
    script = ["bash", os.path.join(REPO, "scripts", "ds_pretrain_gpt2.sh"), *flags]
    _, output = _launch_in_own_group(script, script_environment(**env), 1, signal.SIGTERM)
    _stopped_cleanly(output, "SIGTERM", checkpoints, train_iters)
    assert "data parallel 2" in output and "ZeRO stage 2, fp32" in output and LOG_LINE.search(output), output[-4000:]
    assert "validation loss at iteration 2 | lm loss value:" in output and "lm loss PPL:" in output
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(tmp_path / "runs"))
    quiet = [*flags, "--eval-iters", "0"]  # evaluation draws nothing from the training streams: left out here
    run_distributed(2, train, entry_argv(dry_run("ds_pretrain_gpt2.sh", env, *quiet)))
    assert (checkpoints / "latest").read_text().strip() == f"global_step{train_iters}"
    reference = entry_argv(dry_run("ds_pretrain_gpt2.sh", {**env, "CHECKPOINT_DIR": str(tmp_path / "unbroken")},
                                   *quiet))
    assert same_weights(unbroken_weights(2, reference), read_checkpoint(str(checkpoints))[0]), \
        "final weights must be the unbroken run's"


def test_fp16_on_cpu_is_one_clear_line(tmp_path):
    result = subprocess.run([sys.executable, os.path.join(REPO, "pretrain_gpt2.py"), "--fp16", "--model-size", "tiny",
                             "--data-cache-dir", str(tmp_path)], capture_output=True, text=True, cwd=REPO)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert errors == ["error: --fp16: DeepSpeed does not support fp16 on the CPU accelerator (\"Type fp16 is not "
                      "supported on your device\"); use --bf16 on CPU, or run on a GPU"]


def test_signals_to_the_process_group_save_and_the_resumes_are_the_unbroken_run(tmp_path, data_prefix):
    """Ctrl-C's SIGINT, then a scheduler's SIGTERM, to a one-process run's whole group (the rank and its
    loader worker): each time the rank commits a checkpoint and exits 0; the run resumed twice (the rest on
    the test's pool rank) ends with the weights of the run trained without a break (dropout on)."""
    from distributed import run_distributed
    from gpt2_runs import train
    train_iters, checkpoints = 100, tmp_path / "checkpoints"
    flags = ["--model-size", "tiny", "--seq-length", "32", "--train-iters", str(train_iters), "--log-interval", "1",
             "--eval-iters", "0", "--num-workers", "1", "--data-path", data_prefix, "--tokenizer-type",
             "CharacterLevelTokenizer", "--data-cache-dir", str(tmp_path)]
    command = [sys.executable, os.path.join(REPO, "pretrain_gpt2.py"), *flags, "--save", str(checkpoints), "--load",
               str(checkpoints)]
    # torch's threads as the pool's one rank takes them (a process's cores), so that the float sums agree
    environment = {name: value for name, value in script_environment().items() if name != "OMP_NUM_THREADS"}
    for signal_to_send in (signal.SIGINT, signal.SIGTERM):
        returncode, output = _launch_in_own_group(command, environment, 1, signal_to_send)
        assert returncode == 0, output[-3000:]
        _stopped_cleanly(output, signal_to_send.name, checkpoints, train_iters)
    run_distributed(1, train, [*flags, "--save", str(checkpoints), "--load", str(checkpoints)])  # the rest, resumed
    unbroken = unbroken_weights(1, [*flags, "--save", str(tmp_path / "unbroken")])
    assert same_weights(unbroken, read_checkpoint(str(checkpoints))[0]), "final weights must be the unbroken run's"


def test_the_op_is_built_by_the_environments_ninja_without_activation(monkeypatch):
    """`.venv/bin/python` run without the venv on PATH found a system ninja (1.11) whose hash of the build
    command differs from pip's (1.13): activated and plain runs rebuilt DeepSpeed's op in turn, 30 s each."""
    import shutil

    from initialize import extension_folder
    own = os.path.join(os.path.dirname(sys.executable), "ninja")
    if not os.path.isfile(own):
        pytest.skip("this Python has no ninja of its own")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    extension_folder()
    assert shutil.which("ninja") == own
    extension_folder()
    assert os.environ["PATH"].split(os.pathsep).count(os.path.dirname(own)) == 1


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
    result = run_script("benchmark_gpu.sh", {}, "--dry-run")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line for line in result.stdout.splitlines() if "flags ok: pretrain_gpt2.py" in line]
    assert len(rows) == 2 * 2 * 2 * 4 + 2 + 5 + 2, result.stdout
    assert any("--compile" in row for row in rows) and any("--fp16" in row for row in rows) \
        and any("--bf16-weights" in row for row in rows) and any("--attention-types local" in row for row in rows)
    assert all("--bf16" in row.split() or "--fp16" in row.split() or "--bf16-weights" in row.split() for row in rows)
    picked = run_script("benchmark_gpu.sh", {"SIZES": "gpt2-350m", "SEQS": "1024", "MICRO": "8"}, "--dry-run")
    assert picked.returncode == 0 and picked.stdout.count("flags ok") == 2 + 1 + 5 + 2, picked.stdout
