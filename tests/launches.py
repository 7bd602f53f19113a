"""Launching the scripts as users do, for the launcher tests: dry runs, real processes, their log lines."""

import os
import re
import shlex
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOSS_LINE = re.compile(r" iteration +(\d+)/ +\d+ \|.* lm loss: (\S+) \|")


def script_environment(**env):
    """This environment with this venv's launchers first on PATH, one torch thread per rank, and `env`."""
    path = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    return {**os.environ, "PATH": path, "OMP_NUM_THREADS": "1", **env}


def run_script(name, env, *flags, timeout=600):
    return subprocess.run(["bash", os.path.join(REPO, "scripts", name), *flags], capture_output=True, text=True,
                          env=script_environment(**env), cwd=REPO, timeout=timeout)


def dry_run(name, env, *flags):
    """The command scripts/`name` would run (DRY_RUN=1), as its words."""
    result = run_script(name, {**env, "DRY_RUN": "1"}, *flags)
    assert result.returncode == 0, result.stderr[-2000:]
    return shlex.split(result.stdout.strip().splitlines()[-1])


def entry_argv(words, entry="pretrain_gpt2.py"):
    """The flags the entry script gets in a command's words."""
    return words[words.index(entry) + 1:]


def logged_losses(output):
    """{iteration: lm loss} of the log lines in `output`."""
    return {int(i): float(loss) for i, loss in LOSS_LINE.findall(output)}


def unbroken_weights(world_size, argv):
    """The final weights of `argv` trained without a break on `world_size` pool ranks (tests/distributed.py)."""
    from checkpointing import read_checkpoint
    from distributed import run_distributed
    from gpt2_runs import train
    run_distributed(world_size, train, argv)
    save = argv[len(argv) - argv[::-1].index("--save")]  # the value of the last --save
    return read_checkpoint(save)[0]


def same_weights(expected, got):
    return expected.keys() == got.keys() and all(bool((expected[k] == got[k]).all()) for k in expected)
