"""Commands that run the operations flows once, here and now: check-data, monitor, retrain.

Each runs its Prefect flow in this process (against ``PREFECT_API_URL`` when set, else an
ephemeral Prefect), so they work without a server or a worker. With a server, the same flows run
on their schedules and triggers as the deployments of ``prefect.yaml``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fpgaflow.flows.cli import UsageError
from fpgaflow.flows.cli.run import add_label_arguments, add_quiet_argument, labels_of
from fpgaflow.flows.cli.serving import add_tls_arguments, tls_options


def register(subparsers) -> None:
    check = subparsers.add_parser(
        "check-data", help="Fingerprint a data folder; emit fpgaflow.dataset.updated when it changed since the last check."
    )
    check.add_argument("data_dir", type=Path)
    check.add_argument("--model", default="", help="Model the data trains (carried in the event; default: the folder's name).")
    check.add_argument("--json", action="store_true", help="End with one JSON line summarising the check.")
    check.set_defaults(handler=_check_data)

    monitor = subparsers.add_parser(
        "monitor",
        help="Score a holdout folder against a deployed model (accuracy for a classifier, mAP@0.5 for a "
        "detector); emit fpgaflow.model.degraded (and exit 1) when the score is below the threshold.",
    )
    monitor.add_argument(
        "data_dir",
        type=Path,
        help="Holdout images: one folder per class (classifier), or labels.txt, images/ and annotations/ (detector).",
    )
    monitor.add_argument("--endpoint", required=True, metavar="HOST:PORT", help="Gateway or node address.")
    monitor.add_argument("--model", required=True, help="Model name (selects the model on a gateway).")
    monitor.add_argument(
        "--threshold",
        type=float,
        help="Lowest acceptable score, 0-1 (default: setting monitor_min_accuracy, or monitor_min_map50 for a detector).",
    )
    monitor.add_argument("--json", action="store_true", help="End with one JSON line summarising the check.")
    add_tls_arguments(monitor, system_roots=False)
    monitor.set_defaults(handler=_monitor)

    retrain = subparsers.add_parser(
        "retrain",
        help="Train a candidate on the current data; promote and roll it out only if it beats the champion "
        "on the same test split (accuracy for a classifier, mAP@0.5 for a detector).",
    )
    retrain.add_argument("data_dir", nargs="?", type=Path, help="Data folder (default: the champion's).")
    retrain.add_argument("--model", default="", help="Registered model name (default: the data folder's name).")
    retrain.add_argument("--config", type=Path, help="Pipeline YAML (default: the champion's own config).")
    retrain.add_argument("--no-roll-out", action="store_true", help="Promote a better candidate but do not deploy it.")
    retrain.add_argument("--json", action="store_true", help="End with one JSON line summarising the decision.")
    add_label_arguments(retrain)
    add_quiet_argument(retrain)
    retrain.set_defaults(handler=_retrain)


def _report(summary: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary, default=str))
    else:
        for key, value in summary.items():
            print(f"{key}: {value}")


def _check_data(args: argparse.Namespace) -> int:
    if not args.data_dir.is_dir():
        raise UsageError(f"data folder {args.data_dir} does not exist or is not a folder")
    from fpgaflow.flows.check_data import check_data

    _report(check_data(str(args.data_dir), args.model), args.json)
    return 0


def _monitor(args: argparse.Namespace) -> int:
    from fpgaflow.tasks.errors import PipelineStepError
    from fpgaflow.tasks.operations.monitoring import parse_endpoint

    try:
        parse_endpoint(args.endpoint)
    except PipelineStepError as error:
        raise UsageError(f"--endpoint: {error}") from None
    if args.threshold is not None and not 0 <= args.threshold <= 1:
        raise UsageError(f"--threshold must be a fraction between 0 and 1, got {args.threshold}")
    if not args.data_dir.is_dir():
        raise UsageError(f"holdout folder {args.data_dir} does not exist or is not a folder")
    from fpgaflow.flows.monitor import monitor

    tls = {name: str(path) for name, path in tls_options(args).items() if isinstance(path, Path)}
    summary = monitor(args.endpoint, str(args.data_dir), args.model, args.threshold, tls=tls or None)
    _report(summary, args.json)
    return 1 if summary["degraded"] else 0


def _retrain(args: argparse.Namespace) -> int:
    if args.data_dir is None and not args.model and args.config is None:
        raise UsageError("give a data folder, a model name (--model) or a config file (--config)")
    from fpgaflow.flows.retrain import retrain
    from fpgaflow.tasks.errors import PipelineStepError

    try:
        summary = retrain(
            str(args.data_dir or ""), args.model, str(args.config or ""), roll_out=not args.no_roll_out, **labels_of(args)
        )
    except PipelineStepError as error:
        print(f"fpgaflow retrain: {error}", file=sys.stderr)
        return 1
    _report(summary, args.json)
    return 0
