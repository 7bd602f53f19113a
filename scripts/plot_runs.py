"""Loss curves of one or several runs on one figure: training and validation loss, the learning rate and the
gradient norm, against tokens (with --seq-length) or iterations, read from a run's tensorboard event files
(--tensorboard-dir) or from its log lines alone (a run started elsewhere; Megatron-LM's lines read too).

    python scripts/plot_runs.py RUN_DIR_OR_LOG [RUN_DIR_OR_LOG ...] --output curves.png [--seq-length 1024]
        [--labels NAME ...]

A folder is read from its event files (events.out.tfevents.*, searched below it), a file as a log. The
points are what the run logged: the mean over each --log-interval window at its last iteration, and each
validation.
"""

import argparse
import glob
import os
import re
import sys

PANELS = (("loss", ("lm loss", "validation/lm loss")), ("learning rate", ("learning rate",)),
          ("grad norm", ("grad norm",)))
_ITERATION = re.compile(r"\s*iteration\s+(\d+)\s*/\s*\d+\s*\|(.*)")
_VALIDATION = re.compile(r"\s*validation loss at iteration (\d+) \| lm loss value: (\S+) \|")
_FIELD = re.compile(r"\s*([a-z][a-z /()-]*?)\s*:\s*([-+0-9.eE]+)\s*$")


def read_log(path):
    """{series name: {iteration: value}} of a training log: each iteration line's fields, and the
    validation lines as "validation/lm loss"."""
    series = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            match = _ITERATION.match(line)
            if match:
                iteration = int(match.group(1))
                for field in match.group(2).split("|"):
                    parsed = _FIELD.match(field)
                    if parsed:
                        series.setdefault(parsed.group(1), {})[iteration] = float(parsed.group(2))
                continue
            match = _VALIDATION.match(line)
            if match:
                series.setdefault("validation/lm loss", {})[int(match.group(1))] = float(match.group(2))
    return series


def read_events(folder):
    """{series name: {iteration: value}} of the tensorboard event files below `folder` (tensorboardX's
    Event records, read with the tfrecord package; tensorboardX wrote the names' spaces as underscores)."""
    from tensorboardX.proto.event_pb2 import Event
    from tfrecord.reader import tfrecord_iterator
    series = {}
    for path in sorted(glob.glob(os.path.join(folder, "**", "events.out.tfevents.*"), recursive=True)):
        for record in tfrecord_iterator(path):
            event = Event.FromString(bytes(record))
            for value in event.summary.value:
                series.setdefault(value.tag.replace("_", " "), {})[event.step] = value.simple_value
    return series


def read_run(path):
    if os.path.isdir(path):
        series = read_events(path)
        if not series:
            raise SystemExit(f"{path}: no tensorboard event files (events.out.tfevents.*) below it")
        return series
    if not os.path.isfile(path):
        raise SystemExit(f"{path}: no such file or folder")
    series = read_log(path)
    if not series:
        raise SystemExit(f"{path}: no ' iteration N/ M | ...' log lines in it")
    return series


def x_values(series, iterations, seq_length):
    """Tokens seen at each iteration (consumed samples x seq_length) when both are known, else iterations."""
    samples = series.get("consumed samples")
    if seq_length and samples:
        per_iteration = samples[min(samples)] / min(samples)  # the global batch (constant within a run)
        return [samples.get(i, i * per_iteration) * seq_length for i in iterations]
    return list(iterations)


def plot(runs, output, seq_length=None):
    """runs: [(label, series)] -> one PNG with a panel per PANELS entry."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figure, axes = plt.subplots(len(PANELS), 1, figsize=(8, 3 * len(PANELS)), sharex=True)
    for color, (label, series) in enumerate(runs):
        for axis, (title, names) in zip(axes, PANELS):
            for name in names:
                points = series.get(name)
                if not points:
                    continue
                iterations = sorted(points)
                validation = name.startswith("validation")
                axis.plot(x_values(series, iterations, seq_length), [points[i] for i in iterations],
                          color=f"C{color}", linestyle="--" if validation else "-", marker="o" if validation else None,
                          markersize=3, label=f"{label}: {name}" if title == "loss" else label)
            axis.set_ylabel(title)
    axes[-1].set_yscale("log")  # gradient norms differ by orders of magnitude between optimizers
    for axis in axes:
        if axis.lines:
            axis.legend(fontsize=8)
        axis.grid(alpha=0.3)
    axes[-1].set_xlabel("tokens" if seq_length else "iteration")
    figure.tight_layout()
    figure.savefig(output, dpi=100)
    plt.close(figure)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR_OR_LOG")
    parser.add_argument("--output", default="curves.png")
    parser.add_argument("--seq-length", type=int, default=None, help="the runs' --seq-length: x-axis in tokens")
    parser.add_argument("--labels", nargs="+", default=None, help="one name per run (default: the paths)")
    args = parser.parse_args(argv)
    labels = args.labels or [os.path.basename(os.path.normpath(run)) for run in args.runs]
    if len(labels) != len(args.runs):
        parser.error(f"--labels: {len(labels)} names for {len(args.runs)} runs")
    plot([(label, read_run(run)) for label, run in zip(labels, args.runs)], args.output, args.seq_length)
    print(f"wrote {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
