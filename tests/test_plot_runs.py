"""scripts/plot_runs.py: the series it plots are the values the run logged, read from tensorboard event files
and from the log lines alone; two runs go on one PNG."""

import contextlib
import io
import os
import sys

from distributed import run_distributed
from gpt2_runs import train_argv

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "scripts"))


def _logged_run(argv, log_path):
    import pretrain_gpt2
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        history = pretrain_gpt2.main(argv)
    with open(log_path, "w") as f:
        f.write(printed.getvalue())
    return history


def test_plotted_series_are_the_logged_values_from_events_and_from_a_log(tmp_path, data_prefix):
    import plot_runs
    argv = train_argv(data_prefix, "--train-iters", "6", "--log-interval", "2", "--eval-interval", "3",
                      "--eval-iters", "1", "--tensorboard-dir", str(tmp_path / "tb"))
    (history,) = run_distributed(1, _logged_run, argv, str(tmp_path / "run.log"))
    events, log = plot_runs.read_run(str(tmp_path / "tb")), plot_runs.read_run(str(tmp_path / "run.log"))
    logged = {i: values["lm loss"] for i, values in history.items()}  # every iteration; the lines hold pairs' means
    means = {i: (logged[i - 1] + logged[i]) / 2 for i in (2, 4, 6)}
    for series in (events, log):
        assert sorted(series["lm loss"]) == [2, 4, 6] and sorted(series["validation/lm loss"]) == [3, 6]
        for i, mean in means.items():
            assert abs(series["lm loss"][i] - mean) <= 1e-6 * mean, (i, series["lm loss"][i], mean)
        assert series["consumed samples"] == {2: 16, 4: 32, 6: 48}
        assert set(series["learning rate"]) == set(series["grad norm"]) == {2, 4, 6}
    for i in (3, 6):
        assert abs(events["validation/lm loss"][i] - log["validation/lm loss"][i]) <= 1e-6 * log["validation/lm loss"][i]
    output = tmp_path / "curves.png"
    plot_runs.main([str(tmp_path / "tb"), str(tmp_path / "run.log"), "--output", str(output), "--seq-length", "32",
                    "--labels", "events", "log"])
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and output.stat().st_size > 10000
    assert plot_runs.x_values(log, [2, 4], 32) == [16 * 32, 32 * 32]
