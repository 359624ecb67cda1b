"""`fpgaflow weights list|fetch|import`: the ImageNet files, their hashes and the local cache."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fpgaflow.flows.cli.run import add_quiet_argument


def register(subparsers) -> None:
    weights = subparsers.add_parser(
        "weights",
        help="The ImageNet weight files: list them, fetch them into the cache, import a file brought in by hand.",
        description="Files are cached under $FPGAFLOW_HOME/cache/weights, each verified against its published hash; "
        "FPGAFLOW_WEIGHTS_URL points downloads at a mirror.",
    )
    commands = weights.add_subparsers(dest="weights_command", required=True, metavar="WEIGHTS_COMMAND")
    listing = commands.add_parser("list", help="Every file with its size, hash and whether it is cached.")
    listing.add_argument("--json", action="store_true", help="Print one JSON object per file.")
    listing.set_defaults(handler=_list)
    fetch = commands.add_parser("fetch", help="Download files into the cache ahead of a run.")
    fetch.add_argument(
        "names", nargs="+", metavar="NAME", help="A file's name (resnet50_notop ...), a featurizer (both its files) or all."
    )
    add_quiet_argument(fetch)
    fetch.set_defaults(handler=_fetch)
    imported = commands.add_parser("import", help="Copy a file brought in by hand into the cache, after checking its hash.")
    imported.add_argument("files", nargs="+", type=Path, metavar="FILE")
    imported.set_defaults(handler=_import)


def _size(count: int | None) -> str:
    return "?" if count is None else f"{count / 1e6:.1f} MB"


def _list(args: argparse.Namespace) -> int:
    from fpgaflow.tasks.featurizers.weights_store import cache_status

    rows = cache_status()
    if args.json:
        for row in rows:
            entry = row.entry
            print(
                json.dumps(
                    {
                        "name": entry.name,
                        "file": entry.file,
                        "url": entry.url,
                        "size": row.size,
                        entry.algorithm: entry.digest,
                        "cached": str(row.path) if row.path else None,
                    }
                )
            )
        return 0
    width = max(len(row.entry.name) for row in rows)
    for row in rows:
        entry = row.entry
        cached = f"cached {row.path}" if row.path else "not cached"
        print(f"{entry.name:<{width}}  {_size(row.size):>9}  {entry.algorithm} {entry.digest}  {cached}")
    return 0


def _fetch(args: argparse.Namespace) -> int:
    from fpgaflow.tasks.featurizers.weights_store import manifest_of, obtain
    from fpgaflow.tasks.settings import get_pipeline_settings

    settings = get_pipeline_settings()
    for entry in manifest_of(settings).select(args.names):
        print(f"{entry.name}: {obtain(entry, settings)}")
    return 0


def _import(args: argparse.Namespace) -> int:
    from fpgaflow.tasks.featurizers.weights_store import import_file

    for path in args.files:
        entry, cached = import_file(path)
        print(f"{entry.name}: {entry.algorithm} verified, copied to {cached}")
    return 0
