"""What a run logs, and where: one short run writes tensorboard, an offline wandb run and an MLflow store;
wandb and MLflow hold tensorboard's scalars, the flags and the ds_config; scripts/plot_runs.py plots the
values the run logged, read from the event files and from the log lines alone; two runs go on one PNG."""

import contextlib
import glob
import io
import json
import math
import os
import struct
import sys

import pytest

from distributed import run_distributed
from gpt2_runs import train_argv

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "scripts"))


def _logged_run(argv, log_path):
    import pretrain_gpt2
    os.environ.pop("WANDB_API_KEY", None)
    os.environ.pop("WANDB_MODE", None)  # no key here: the run must choose offline by itself
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        history = pretrain_gpt2.main(argv)
    with open(log_path, "w") as f:
        f.write(printed.getvalue())
    return history


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory, data_prefix):
    """Six iterations, logged every two, validated every three, to tensorboard, wandb and MLflow."""
    root = tmp_path_factory.mktemp("logged_run")
    argv = train_argv(data_prefix, "--train-iters", "6", "--log-interval", "2", "--eval-interval", "3",
                      "--eval-iters", "1", "--tensorboard-dir", str(root / "tb"), "--wandb-project", "tiny",
                      "--wandb-dir", str(root / "wandb"), "--mlflow-tracking-uri", str(root / "mlflow"))
    (history,) = run_distributed(1, _logged_run, argv, str(root / "run.log"))
    return root, history


def _wandb_records(folder):
    """The records of the offline wandb run below `folder`: its .wandb file is a LevelDB log (32 KiB blocks
    of chunks with a 7-byte header) after wandb's own 7-byte header, each record a wandb Record protobuf."""
    from wandb.proto.wandb_internal_pb2 import Record
    (path,) = glob.glob(os.path.join(folder, "wandb", "offline-run-*", "run-*.wandb"))
    data, block = open(path, "rb").read(), 32768
    assert data[:4] == b":W&B"
    records, position, pending = [], 7, b""
    while position + 7 <= len(data):
        if block - position % block < 7:
            position += block - position % block
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        pending += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a whole record, or the last chunk of one
            records.append(Record.FromString(pending))
            pending = b""
    return records


def _wandb_logged(folder):
    """({series: {step: value}}, the run's config) of the offline wandb run."""
    series, config = {}, {}
    for record in _wandb_records(folder):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            items = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            step = items.pop("_step")
            for name, value in items.items():
                if not name.startswith("_"):
                    series.setdefault(name, {})[step] = value
        elif kind in ("config", "run"):
            updates = record.config.update if kind == "config" else record.run.config.update
            config.update({item.key: json.loads(item.value_json) for item in updates})
    return series, config


def _mlflow_logged(folder):
    """({series: {step: value}}, params, ds_config) of the one MLflow run in the store in `folder`."""
    import mlflow
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{folder}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("pretraining").experiment_id])
    series = {name: {m.step: m.value for m in client.get_metric_history(run.info.run_id, name)}
              for name in run.data.metrics}
    with open(client.download_artifacts(run.info.run_id, "ds_config.json", str(folder)), encoding="utf-8") as f:
        ds_config = json.load(f)
    return series, run.data.params, ds_config


def _assert_same_series(theirs, events, rename=lambda name: name):
    for name, points in events.items():
        assert set(theirs[rename(name)]) == set(points), name
        for step, value in points.items():  # tensorboard holds float32
            assert math.isclose(theirs[rename(name)][step], value, rel_tol=1e-6, abs_tol=1e-6), (name, step)


def test_wandb_and_mlflow_hold_tensorboards_scalars_flags_and_ds_config(logged_run):
    import plot_runs

    from trackers import _mlflow_name
    root, _ = logged_run
    events = plot_runs.read_events(str(root / "tb"))
    assert {"lm loss", "validation/lm loss", "test/lm loss", "learning rate", "grad norm", "tokens per second",
            "TFLOP/s per device", "loss scale"} <= set(events)
    wandb_series, wandb_config = _wandb_logged(str(root / "wandb"))
    assert set(wandb_series) == set(events)
    _assert_same_series(wandb_series, events)
    assert wandb_config["flags"]["train_iters"] == 6 and wandb_config["ds_config"]["train_batch_size"] == 8
    mlflow_series, params, ds_config = _mlflow_logged(root / "mlflow")
    assert set(mlflow_series) == {_mlflow_name(name) for name in events}
    _assert_same_series(mlflow_series, events, _mlflow_name)
    assert params["train_iters"] == "6" and json.loads(params["wandb_project"]) == "tiny"
    assert ds_config == wandb_config["ds_config"]


def test_plotted_series_are_the_logged_values_from_events_and_from_a_log(logged_run):
    import plot_runs
    root, history = logged_run
    events, log = plot_runs.read_run(str(root / "tb")), plot_runs.read_run(str(root / "run.log"))
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
    output = root / "curves.png"
    plot_runs.main([str(root / "tb"), str(root / "run.log"), "--output", str(output), "--seq-length", "32",
                    "--labels", "events", "log"])
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and output.stat().st_size > 10000
    assert plot_runs.x_values(log, [2, 4], 32) == [16 * 32, 32 * 32]
