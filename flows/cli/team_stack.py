"""`fpgaflow team-stack up|down|status [--dir DIR]`: PostgreSQL, an MLflow tracking server and a Prefect server."""

from __future__ import annotations

import argparse
import json
import shlex
import time
from pathlib import Path

from fpgaflow.flows.cli import UsageError

SERVICE_NAMES = ("postgres", "mlflow", "prefect")


def register(subparsers) -> None:
    team = subparsers.add_parser(
        "team-stack",
        help="Start, stop or show a team's stack on this machine: PostgreSQL, an MLflow tracking server with proxied "
        "artifacts and a Prefect server, both on it; all data under one folder.",
    )
    team.add_argument("action", choices=["up", "down", "status"])
    team.add_argument(
        "services",
        nargs="*",
        choices=[[], *SERVICE_NAMES],
        metavar="SERVICE",
        help="down: only these (postgres, mlflow, prefect); default all.",
    )
    team.add_argument("--dir", type=Path, help="The stack's folder (default: $FPGAFLOW_HOME/team-stack).")
    team.add_argument("--json", action="store_true", help="status and up: one JSON object.")
    team.set_defaults(handler=_team_stack)


def _team_stack(args: argparse.Namespace) -> int:
    from fpgaflow.flows.team_stack.processes import StackError
    from fpgaflow.flows.team_stack.stack import TeamStack
    from fpgaflow.tasks.settings import get_pipeline_settings

    if args.services and args.action != "down":
        raise UsageError(f"services are named only to down, not to {args.action}")
    stack = TeamStack(args.dir or get_pipeline_settings().home / "team-stack")
    try:
        if args.action == "down":
            stopped = stack.down(args.services or SERVICE_NAMES)
            print(f"stopped: {', '.join(stopped)}" if stopped else f"nothing of the stack in {stack.directory} was running")
            return 0
        started = time.monotonic()
        services = stack.up() if args.action == "up" else stack.status()
        elapsed = time.monotonic() - started
        exports = stack.exports() if any(service.port for service in services) else {}
    except StackError as error:
        raise UsageError(str(error)) from None
    if args.json:
        report = {"dir": str(stack.directory), "services": [service.model_dump() for service in services], "exports": exports}
        print(json.dumps({**report, **({"up_seconds": round(elapsed, 1)} if args.action == "up" else {})}))
        return 0
    for service in services:
        where = service.url or "never started"
        print(f"{service.name:<9} {'running' if service.running else 'stopped':<8} {where:<28} {service.purpose}")
    if args.action == "up":
        print(f"up in {elapsed:.1f} s; data in {stack.directory}. Point fpgaflow at the stack:")
    if exports:
        print("\n".join(f"export {key}={shlex.quote(value)}" for key, value in exports.items()))
    return 0
