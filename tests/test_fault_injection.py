"""Crashes: a run killed with SIGKILL at random moments (start-up, steps, saves) and restarted until it
finishes ends with an unbroken run's weights (scripts/fault_injection.py, short version); a lock that
a killed start-up leaves in torch's extension folder does not hang the next launch."""

import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from initialize import extension_folder

# launches and kills real processes: left out of `pytest -m "not distributed"`; the trial's launches take a
# minute or two on a 2-core CPU, so its tests get twice the suite's time limit
pytestmark = [pytest.mark.distributed, pytest.mark.timeout(600)]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def fault_injection(tmp_path_factory):
    """The short version CI runs: 3 kills, on bytes (small checkpoints). Its workdir holds the extension folder
    its launches built."""
    workdir = tmp_path_factory.mktemp("fault-injection")
    built = extension_folder()
    if os.path.isdir(built):  # the op this session built: the launches load it rather than compile their own
        shutil.copytree(built, workdir / "extensions", ignore=shutil.ignore_patterns("lock"))
    result = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "fault_injection.py"), "--kills", "3",
                             "--vocabulary", "bytes", "--workdir", str(workdir)], capture_output=True, text=True, timeout=900)
    return workdir, result


def test_a_run_killed_three_times_ends_as_an_unbroken_run(fault_injection):
    _, result = fault_injection
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("trials ")]
    assert "| kills 3 |" in line and line.endswith("final weights equal: yes"), line


def test_a_stale_extension_lock_is_cleared(fault_injection, tmp_path, data_prefix):
    extensions = fault_injection[0] / "extensions"
    lock = str(extensions / "deepspeed_shm_comm" / "lock")
    with open(lock, "w"):
        pass
    os.utime(lock, (time.time() - 600, time.time() - 600))  # left by a start-up killed ten minutes ago
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "pretrain_gpt2.py"), "--model-size", "tiny", "--seq-length", "32",
         "--train-iters", "1", "--eval-iters", "0", "--data-path", data_prefix, "--tokenizer-type",
         "CharacterLevelTokenizer", "--data-cache-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=REPO,
        env={**os.environ, "TORCH_EXTENSIONS_DIR": str(extensions), "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(rf"warning: removed {re.escape(lock)}, 6\d\d s old and held by no living process", result.stderr)
    assert not os.path.exists(lock)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_twenty_kills_end_as_an_unbroken_run(tmp_path):
    """The full trial (`pytest -m slow`; about 8 minutes on a 2-core CPU): 20 SIGKILLs at random moments
    of start-up, steps and saves."""
    result = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "fault_injection.py"), "--kills", "20",
                             "--workdir", str(tmp_path)], capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("trials ")]
    assert "| kills 20 |" in line and line.endswith("final weights equal: yes"), line
