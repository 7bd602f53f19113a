"""Short GPT-2 runs on the bundled corpus, for tests that train (run on ranks via distributed.run_distributed)."""

import contextlib
import importlib
import io
import os

import pytest

ITERS = 20


def train_argv(data_prefix, *extra, batch_size=8, dropout=0.0, tokenizer="CharacterLevelTokenizer"):
    """A tiny model, 20 iterations, a loss line each; no dropout unless asked (so every layout draws
    nothing at random and losses compare across layouts). data_prefix None: the data flags come in extra.
    tokenizer: the one the data was tokenized with (conftest's data_prefix: bytes; gpt2_data_prefix:
    GPT2BPETokenizer). Batches are read in the rank's own process (--num-workers 0): a loader worker
    process per run doubled a tiny run's time; the launcher and Megatron command-line tests keep the
    default worker."""
    data = [] if data_prefix is None else ["--data-path", data_prefix, "--data-cache-dir", os.path.dirname(data_prefix)]
    return ["--model-size", "tiny", "--seq-length", "32", "--batch-size", str(batch_size), "--train-iters", str(ITERS),
            "--log-interval", "1", "--eval-iters", "0", "--attention-dropout", str(dropout), "--hidden-dropout",
            str(dropout), "--lr", "1e-3", "--warmup", "0.1", "--tokenizer-type", tokenizer, "--num-workers", "0",
            *data, *extra]


def train(argv, key="lm loss"):
    """pretrain_gpt2.main on this rank; `key` of each iteration's history."""
    import pretrain_gpt2
    history = pretrain_gpt2.main(argv)
    return [history[i][key] for i in sorted(history)]


def expect_error(argv, entry="pretrain_gpt2"):
    """Run an entry script's main and return the one error line it prints (it must stop with SystemExit 2)."""
    import mpu
    stderr = io.StringIO()
    mpu.destroy_model_parallel()  # one process runs several jobs here
    with contextlib.redirect_stderr(stderr), pytest.raises(SystemExit) as stopped:
        importlib.import_module(entry).main(argv)
    assert stopped.value.code == 2, stderr.getvalue()
    lines = [line for line in stderr.getvalue().splitlines() if "error" in line]
    assert len(lines) == 1 and "Traceback" not in stderr.getvalue(), stderr.getvalue()
    return lines[0]


@contextlib.contextmanager
def wrapped_steps(entry="pretrain_gpt2", **wrappers):
    """Inside, an entry script's STEPS (training.EntrySteps) has some steps replaced: wrappers maps a
    step's name (get_batch, forward_step) to a function that takes the original step and returns its
    replacement. The entry script reads STEPS when its main starts."""
    module = importlib.import_module(entry)
    steps = module.STEPS
    module.STEPS = steps._replace(**{name: wrap(getattr(steps, name)) for name, wrap in wrappers.items()})
    try:
        yield
    finally:
        module.STEPS = steps


def train_keeping_engine(argv, entry="pretrain_gpt2"):
    """An entry script's main on this rank: (its history, the DeepSpeed engine it trained)."""
    engines = []

    def keep_engine(forward_step):
        def step(batch, model, args, loss_tokens):
            engines.append(model)
            return forward_step(batch, model, args, loss_tokens)
        return step
    with wrapped_steps(entry, forward_step=keep_engine):
        history = importlib.import_module(entry).main(argv)
    return history, engines[-1]
