"""Short GPT-2 runs on the bundled corpus, for tests that train (run on ranks via distributed.run_distributed)."""

import os

ITERS = 20


def train_argv(data_prefix, *extra, batch_size=8):
    """A tiny model, no dropout (so every layout draws nothing at random), 20 iterations, a loss line each."""
    return ["--model-size", "tiny", "--seq-length", "32", "--batch-size", str(batch_size), "--train-iters", str(ITERS),
            "--log-interval", "1", "--eval-iters", "0", "--attention-dropout", "0", "--hidden-dropout", "0",
            "--lr", "1e-3", "--warmup", "0.1", "--data-path", data_prefix,
            "--data-cache-dir", os.path.dirname(data_prefix), *extra]


def train(argv, key="lm loss"):
    """pretrain_gpt2.main on this rank; `key` of each iteration's history."""
    import pretrain_gpt2
    history = pretrain_gpt2.main(argv)
    return [history[i][key] for i in sorted(history)]
