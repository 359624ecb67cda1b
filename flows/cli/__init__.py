"""The ``fpgaflow`` command.

Each module in :data:`COMMAND_MODULES` adds its subcommands with ``register(subparsers)``; a
subcommand's handler takes the parsed arguments and returns the exit code. Modules import their
heavy dependencies inside the handlers, so ``fpgaflow serve`` works with the runtime-only install.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from fpgaflow.fpga_runtime.errors import FpgaflowError
from fpgaflow.tasks.errors import PipelineStepError

COMMAND_MODULES = (
    "fpgaflow.flows.cli.data",
    "fpgaflow.flows.cli.serving",
    "fpgaflow.flows.cli.device",
    "fpgaflow.flows.cli.featurizers",
    "fpgaflow.flows.cli.weights",
    "fpgaflow.flows.cli.run",
    "fpgaflow.flows.cli.registry",
    "fpgaflow.flows.cli.image",
    "fpgaflow.flows.cli.lifecycle",
    "fpgaflow.flows.cli.numerics",
    "fpgaflow.flows.cli.cluster",
    "fpgaflow.flows.cli.operations",
    "fpgaflow.flows.cli.bench",
    "fpgaflow.flows.cli.ui",
    "fpgaflow.flows.cli.team_stack",
)


class UsageError(Exception):
    """A command-line problem reported as one line on stderr, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fpgaflow", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def silence_progress() -> None:
    """``--quiet``: the progress setting off for this process and the ones it starts."""
    from fpgaflow.fpga_runtime.settings import get_settings
    from fpgaflow.tasks.settings import get_pipeline_settings

    os.environ["FPGAFLOW_PROGRESS"] = "false"
    get_settings.cache_clear()
    get_pipeline_settings.cache_clear()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "quiet", False):
        silence_progress()
    try:
        return int(args.handler(args) or 0)
    except (UsageError, FpgaflowError, PipelineStepError, FileNotFoundError, NotADirectoryError) as error:
        print(f"fpgaflow {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
