"""Kill a training run with SIGKILL at random moments and restart it until it finishes; its final
weights must equal an unbroken run's, bit for bit.

    python scripts/fault_injection.py                 # 20 kills
    python scripts/fault_injection.py --kills 3 --vocabulary bytes   # what CI runs

A 2-rank torchrun launch of pretrain_gpt2.py (tiny model, ZeRO-2, dropout on, a checkpoint every
iteration) is killed, launcher and ranks, after a random delay: a third of the kills aim at start-up
(before the first iteration), the rest at a random moment after the first iteration. Each relaunch
resumes with --load. A kill counts as during a save when it leaves a tag folder newer than `latest`
without a manifest, and as during start-up when the launch had logged no iteration. When a run
finishes before all kills are spent, its weights are compared and a new run starts. It prints one line:

    trials N | kills N | kills during save N | kills during start-up N | resumed N | final weights equal: yes/no

Every launch uses its own TORCH_EXTENSIONS_DIR under --workdir (a kill while DeepSpeed's op is loaded
leaves a lock there; start-up clears it, see initialize.py) and a fresh port. Exit status 1 when any
weights differ or a launch hangs.
"""

import argparse
import contextlib
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from checkpointing import read_checkpoint  # noqa: E402
from checkpointing.tags import MANIFEST, read_latest, step_of  # noqa: E402
from launch_environment import free_port  # noqa: E402

ITERS = 12
LAUNCH_TIMEOUT_S = 300


TOKENIZERS = {"gpt2": "GPT2BPETokenizer", "bytes": "CharacterLevelTokenizer"}


def _data_flags(workdir, vocabulary):
    """The bundled corpus tokenized for the run, as its data flags."""
    from data_utils.corpora import resolve_corpus, tokenized_corpus
    from data_utils.tokenization import make_tokenizer
    prefix = tokenized_corpus(resolve_corpus("sample"), make_tokenizer(TOKENIZERS[vocabulary]),
                              os.path.join(workdir, "data"))
    return ["--data-path", prefix, "--data-cache-dir", os.path.dirname(prefix), "--tokenizer-type",
            TOKENIZERS[vocabulary]]


def _command(data, save, port):
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
            "--master_port", str(port), os.path.join(REPO, "pretrain_gpt2.py"), "--model-size", "tiny",
            "--seq-length", "32", "--batch-size", "4", "--train-iters", str(ITERS), "--lr-decay-iters", str(ITERS),
            "--lr", "1e-3", "--log-interval", "1", "--eval-iters", "0", "--zero-stage", "2",
            *data, "--save", save, "--load", save, "--save-interval", "1"]


def _launch(data, save, workdir, log_path):
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "TORCH_EXTENSIONS_DIR": os.path.join(workdir, "extensions")}
    log = open(log_path, "w")
    process = subprocess.Popen(_command(data, save, free_port()), stdout=log, stderr=subprocess.STDOUT,
                               env=environment, cwd=REPO, start_new_session=True)
    return process, log


def _kill_tree(process):
    """SIGKILL the launcher and every process below it (torchrun starts its ranks in sessions of their own)."""
    import psutil
    victims = [process.pid] + [child.pid for child in psutil.Process(process.pid).children(recursive=True)]
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.wait()
    for pid in victims[1:]:
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(pid).wait(timeout=30)


def _seconds_to_first_iteration(process, log_path):
    """Seconds from now until the launch logs an iteration (or ends)."""
    started = time.time()
    while process.poll() is None and time.time() - started < LAUNCH_TIMEOUT_S:
        with open(log_path) as f:
            if re.search(r" iteration +\d+/", f.read()):
                break
        time.sleep(0.05)
    return time.time() - started


def _unfinished_save(save):
    """A tag folder newer than the one `latest` names, without a manifest: a save cut off."""
    if not os.path.isdir(save):
        return False
    committed = step_of(read_latest(save) or "global_step0")
    return any(step_of(t) is not None and step_of(t) > committed and not os.path.isfile(os.path.join(save, t, MANIFEST))
               for t in os.listdir(save))


def _unbroken_run(data, save, workdir):
    """One launch to the end, without kills: (seconds to the first iteration, seconds after it)."""
    log_path = os.path.join(workdir, "unbroken.log")
    process, log = _launch(data, save, workdir, log_path)
    started, first_iteration = time.time(), None
    while process.poll() is None:
        time.sleep(0.2)
        if first_iteration is None:
            with open(log_path) as f:
                if re.search(r" iteration +\d+/", f.read()):
                    first_iteration = time.time()
        if time.time() - started > LAUNCH_TIMEOUT_S:
            _kill_tree(process)
            raise SystemExit(f"the unbroken run hung; see {log_path}")
    log.close()
    if process.returncode != 0 or first_iteration is None:
        raise SystemExit(f"the unbroken run failed ({process.returncode}); see {log_path}")
    return first_iteration - started, time.time() - first_iteration


class _Tally:
    def __init__(self):
        self.trials = self.kills = self.during_save = self.during_startup = self.resumed = 0
        self.equal = True

    def line(self):
        return (f"trials {self.trials} | kills {self.kills} | kills during save {self.during_save} | kills during "
                f"start-up {self.during_startup} | resumed {self.resumed} | final weights equal: "
                f"{'yes' if self.equal else 'no'}")


def _interrupted_run(data, reference, workdir, tally, kills_left, rng, startup_s, run_s):
    """One run from scratch, killed until it finishes or no kills are left (then it runs on to the end)."""
    tally.trials += 1
    save = os.path.join(workdir, f"run{tally.trials}")
    launches = 0
    while read_latest(save) != f"global_step{ITERS}":
        log_path = os.path.join(workdir, f"run{tally.trials}-launch{launches}.log")
        process, log = _launch(data, save, workdir, log_path)
        launched = time.time()
        tally.resumed += launches > 0
        launches += 1
        if tally.kills < kills_left:
            if rng.random() < 1 / 3:
                delay = rng.uniform(0.5, startup_s)
            else:  # from the first iteration on: steps and saves
                delay = _seconds_to_first_iteration(process, log_path) + rng.uniform(0.0, run_s)
            try:
                code = process.wait(timeout=max(delay - (time.time() - launched), 0.01))
            except subprocess.TimeoutExpired:
                _kill_tree(process)
                log.close()
                tally.kills += 1
                with open(log_path) as f:
                    started = re.search(r" iteration +\d+/", f.read()) is not None
                tally.during_startup += not started
                tally.during_save += started and _unfinished_save(save)
                continue
        else:
            try:
                code = process.wait(timeout=LAUNCH_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                _kill_tree(process)
                raise SystemExit(f"a launch hung for {LAUNCH_TIMEOUT_S} s; see {log_path}") from None
        log.close()
        if code != 0:
            raise SystemExit(f"a launch failed ({code}); see {log_path}")
    got, _, _ = read_checkpoint(save)
    tally.equal &= got.keys() == reference.keys() and all(torch.equal(got[k], reference[k]) for k in got)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs to land in all (default 20)")
    parser.add_argument("--workdir", default=None, help="where runs, logs and caches go (default: a temporary folder)")
    parser.add_argument("--seed", type=int, default=0, help="of the kill times")
    parser.add_argument("--vocabulary", choices=TOKENIZERS, default="gpt2",
                        help="gpt2: GPT-2's BPE, 50k embedding rows, a checkpoint of about 50 MB each iteration, so "
                             "that kills land during saves; bytes: 258 ids, small saves and a faster trial (the "
                             "suite's short version)")
    args = parser.parse_args(argv)
    workdir = args.workdir or tempfile.mkdtemp(prefix="fault-injection-")
    os.makedirs(workdir, exist_ok=True)
    data = _data_flags(workdir, args.vocabulary)
    if not os.path.isfile(os.path.join(workdir, "extensions", "deepspeed_shm_comm", "deepspeed_shm_comm.so")):
        _unbroken_run(data, os.path.join(workdir, "warm-up"), workdir)  # builds DeepSpeed's op: a slow start-up
    startup_s, run_s = _unbroken_run(data, os.path.join(workdir, "unbroken"), workdir)
    reference, _, _ = read_checkpoint(os.path.join(workdir, "unbroken"))
    tally, rng = _Tally(), random.Random(args.seed)
    while tally.kills < args.kills:
        _interrupted_run(data, reference, workdir, tally, args.kills, rng, startup_s, run_s)
    print(tally.line(), flush=True)
    print(f"(workdir {workdir}; the unbroken launch: {startup_s:.1f} s of start-up, {run_s:.1f} s for {ITERS} "
          "iterations with a checkpoint each)")
    return 0 if tally.equal else 1


if __name__ == "__main__":
    sys.exit(main())
