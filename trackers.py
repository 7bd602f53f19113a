"""Where the logged scalars go besides the log lines: tensorboard (--tensorboard-dir), Weights & Biases
(--wandb-project) and MLflow (--mlflow-tracking-uri), on the first rank only. Each gets the same scalars
at the same iterations (losses, learning rate, grad norm, loss scale, tokens/s, TFLOP/s, validation and
test losses), and wandb and MLflow also get the run's flags and its ds_config once.

wandb and MLflow are optional installs (`pip install wandb`; `pip install mlflow-skinny sqlalchemy
alembic`, or the whole `mlflow`); asking for one that is not installed is one line at start-up. wandb
runs offline (files under --wandb-dir, uploaded later with `wandb sync DIR`, printed) when WANDB_MODE
says so, or when it has no API key or cannot reach its server in a few seconds: a compute node
without a network never waits on it. MLflow's --mlflow-tracking-uri is a tracking server's URI, any
store URI MLflow takes, or a folder, which becomes an SQLite store (FOLDER/mlflow.db, MLflow's local
backend; `mlflow ui --backend-store-uri sqlite:///FOLDER/mlflow.db` shows it) with the artifacts beside it.
"""

import importlib.util
import json
import netrc
import os
import re
import socket
import time
from urllib.parse import urlparse

WANDB_SERVER = "https://api.wandb.ai"
SERVER_TIMEOUT_S = 3.0
URI_SCHEMES = ("http", "https", "file", "sqlite", "postgresql", "mysql", "mssql", "databricks", "databricks-uc", "uc")


def add_tracking_args(parser):
    group = parser.add_argument_group("experiment tracking (first rank only)")
    group.add_argument("--wandb-project", default=None, help="log to this Weights & Biases project")
    group.add_argument("--wandb-name", default=None, help="the wandb run's name (default: wandb's)")
    group.add_argument("--wandb-entity", default=None, help="the wandb team or user (default: the key's)")
    group.add_argument("--wandb-dir", default=None,
                       help="where wandb keeps its files, and offline runs until `wandb sync` (default: "
                            "--tensorboard-dir, else --save, else here)")
    group.add_argument("--mlflow-tracking-uri", nargs="?", const=os.environ.get("MLFLOW_TRACKING_URI", "mlruns"),
                       default=None,
                       help="log to MLflow: a tracking server's URI, a store URI, or a folder (an SQLite store "
                            "there); the flag alone: $MLFLOW_TRACKING_URI, else the folder mlruns")
    group.add_argument("--mlflow-experiment", default="pretraining", help="the MLflow experiment")
    group.add_argument("--mlflow-run-name", default=None, help="the MLflow run's name (default: MLflow's)")
    return parser


def tracking_problems(args):
    """Asked-for trackers that are not installed, as flag problems (before anything is built)."""
    problems = []
    if args.wandb_project and importlib.util.find_spec("wandb") is None:
        problems.append("--wandb-project: wandb is not installed: pip install wandb")
    if args.mlflow_tracking_uri and importlib.util.find_spec("mlflow") is None:
        problems.append("--mlflow-tracking-uri: MLflow is not installed: pip install mlflow-skinny sqlalchemy alembic")
    for name in ("wandb_name", "wandb_entity", "wandb_dir"):
        if getattr(args, name) and not args.wandb_project:
            problems.append(f"--{name.replace('_', '-')} is for a wandb run: add --wandb-project")
    for name in ("mlflow_experiment", "mlflow_run_name"):
        if name in args.explicit and not args.mlflow_tracking_uri:
            problems.append(f"--{name.replace('_', '-')} is for an MLflow run: add --mlflow-tracking-uri")
    return problems


def _flags(args):
    """The run's flags as JSON values."""
    return json.loads(json.dumps({name: value for name, value in vars(args).items() if name != "explicit"},
                                 default=str))


class _Tensorboard:
    def __init__(self, folder):
        from tensorboardX import SummaryWriter
        self.writer = SummaryWriter(log_dir=folder)

    def log(self, scalars, iteration):
        for name, value in scalars.items():
            self.writer.add_scalar(name, value, iteration)

    def close(self):
        self.writer.close()


def _wandb_reachable():
    """(online?, why not): an API key, and the server answering within SERVER_TIMEOUT_S."""
    server = urlparse(os.environ.get("WANDB_BASE_URL", WANDB_SERVER))
    try:
        key = os.environ.get("WANDB_API_KEY") or (netrc.netrc().authenticators(server.hostname) or (None,))[-1]
    except (OSError, netrc.NetrcParseError):
        key = None
    if not key:
        return False, "no API key (WANDB_API_KEY or `wandb login`)"
    try:
        socket.create_connection((server.hostname, server.port or 443), timeout=SERVER_TIMEOUT_S).close()
    except OSError:
        return False, f"{server.hostname} does not answer"
    return True, None


class _Wandb:
    def __init__(self, args, ds_config):
        import wandb
        folder = args.wandb_dir or args.tensorboard_dir or args.save or "."
        os.makedirs(folder, exist_ok=True)
        mode = os.environ.get("WANDB_MODE")
        why = f"WANDB_MODE={mode}"
        if mode is None:
            online, why = _wandb_reachable()
            mode = "online" if online else "offline"
        self.run = wandb.init(project=args.wandb_project, name=args.wandb_name, entity=args.wandb_entity,
                              dir=folder, mode=mode, config={"flags": _flags(args), "ds_config": ds_config})
        self.offline = mode == "offline"
        if self.offline:
            print(f"> wandb: offline, {why}; the run is in {self.run.settings.sync_dir}: upload it with "
                  f"`wandb sync {self.run.settings.sync_dir}`", flush=True)

    def log(self, scalars, iteration):
        self.run.log(scalars, step=iteration)

    def close(self):
        self.run.finish()


def _mlflow_store(uri):
    """(tracking URI, artifact location or None): a folder becomes FOLDER/mlflow.db with FOLDER/artifacts."""
    if urlparse(uri).scheme in URI_SCHEMES:
        return uri, None
    folder = os.path.abspath(uri)
    os.makedirs(folder, exist_ok=True)
    return f"sqlite:///{os.path.join(folder, 'mlflow.db')}", os.path.join(folder, "artifacts")


def _mlflow_name(name):
    """MLflow's metric names take letters, digits, _ - . / : and spaces only."""
    return re.sub(r"[^\w\-./: ]", "", name).strip()


class _Mlflow:
    def __init__(self, args, ds_config):
        import mlflow
        uri, artifacts = _mlflow_store(args.mlflow_tracking_uri)
        self.client = mlflow.MlflowClient(tracking_uri=uri)
        experiment = self.client.get_experiment_by_name(args.mlflow_experiment)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(
            args.mlflow_experiment, artifact_location=artifacts and f"file://{artifacts}")
        self.run_id = self.client.create_run(experiment_id, run_name=args.mlflow_run_name).info.run_id
        flags = {name: json.dumps(value) for name, value in _flags(args).items()}
        self.client.log_batch(self.run_id, params=[mlflow.entities.Param(name, value) for name, value in flags.items()])
        self.client.log_dict(self.run_id, ds_config, "ds_config.json")
        print(f"> mlflow: run {self.run_id} of experiment {args.mlflow_experiment} at {uri}", flush=True)

    def log(self, scalars, iteration):
        import mlflow
        now = int(time.time() * 1000)
        metrics = [mlflow.entities.Metric(_mlflow_name(name), float(value), now, iteration)
                   for name, value in scalars.items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def close(self):
        self.client.set_terminated(self.run_id)


class Trackers:
    """The asked-for trackers as one: log(scalars, iteration) sends to each, close() closes each."""

    def __init__(self, sinks):
        self.sinks = sinks

    def log(self, scalars, iteration):
        for sink in self.sinks:
            sink.log(scalars, iteration)

    def close(self):
        for sink in self.sinks:
            sink.close()


def open_trackers(args, ds_config, rank):
    """The trackers the flags ask for (none on ranks other than the first)."""
    if rank != 0:
        return Trackers([])
    sinks = [_Tensorboard(args.tensorboard_dir)] if args.tensorboard_dir else []
    if args.wandb_project:
        sinks.append(_Wandb(args, ds_config))
    if args.mlflow_tracking_uri:
        sinks.append(_Mlflow(args, ds_config))
    return Trackers(sinks)
