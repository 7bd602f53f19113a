"""Every test runs under a time limit (pytest-timeout, `timeout` in pytest.ini): a test that hangs, even
inside its ranks, fails on its own within its limit, named, and the suite goes on."""

import os
import subprocess
import sys
import time

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)

HANGING = '''
import time

import pytest

from distributed import run_distributed


def _hang():
    time.sleep(3600)


@pytest.mark.timeout(2)
def test_ranks_that_hang():
    run_distributed(1, _hang)


def test_the_next_test_runs_on_fresh_ranks():
    assert run_distributed(1, sum, [1, 2]) == [3]
'''


def test_a_hanging_test_fails_within_its_limit_and_the_suite_goes_on(tmp_path):
    (tmp_path / "test_hanging.py").write_text(HANGING)
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c",
                             os.path.join(REPO, "pytest.ini"), "--rootdir", str(tmp_path), str(tmp_path)],
                            capture_output=True, text=True, timeout=120, cwd=str(tmp_path),
                            env={**os.environ, "PYTHONPATH": os.pathsep.join([TESTS, REPO])})
    took = time.monotonic() - started
    assert "1 failed, 1 passed" in result.stdout, result.stdout[-3000:]
    assert "FAILED test_hanging.py::test_ranks_that_hang - Failed: Timeout" in result.stdout, result.stdout[-3000:]
    assert took < 60, f"{took:.0f} s"
