"""`fpgaflow promote`: give a reviewed model version the ``champion`` alias."""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers) -> None:
    promote = subparsers.add_parser(
        "promote",
        help="Make a model version the champion (refused unless its parity and numerics gates passed).",
    )
    promote.add_argument("name", help="Registered model name.")
    promote.add_argument("version", help="Model version number.")
    promote.add_argument("--json", action="store_true", help="Print the result as one JSON line.")
    promote.set_defaults(handler=_promote)


def _promote(args: argparse.Namespace) -> int:
    from fpgaflow.tasks.registry.promotion import PromotionRefused, promote
    from fpgaflow.tasks.registry.version_state import CHAMPION_ALIAS

    try:
        promotion = promote(args.name, args.version)
    except PromotionRefused as error:
        print(f"fpgaflow promote: refused: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(promotion.model_dump()))
    else:
        previous = f" (was version {promotion.previous_champion})" if promotion.previous_champion else ""
        print(f"{promotion.name} version {promotion.version} is now {CHAMPION_ALIAS}{previous}")
    return 0
