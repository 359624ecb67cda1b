"""Commands about serving images: `fpgaflow image build SERVICE_DIR`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(subparsers) -> None:
    image = subparsers.add_parser("image", help="Serving images of service directories.")
    image_commands = image.add_subparsers(dest="image_command", required=True, metavar="IMAGE_COMMAND")
    build = image_commands.add_parser(
        "build", help="Build the serving image of a service directory (exit 1 when no image was built)."
    )
    build.add_argument("service_dir", type=Path, help="Directory holding service.json and its ONNX files.")
    build.add_argument("--base-image", help="Base image (default: the image_base setting, python:3.11-slim).")
    build.add_argument("--tag", help="Image tag (default: fpgaflow/<name>:<version>).")
    build.add_argument(
        "--output-dir",
        type=Path,
        help="Where the context, build.log and image.json go (default: <home>/images/<name>-<version>).",
    )
    build.add_argument("--quiet", action="store_true", help="Do not echo the build log.")
    build.add_argument("--json", action="store_true", help="Print the result as one JSON object.")
    build.set_defaults(handler=_build)


def _build(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from fpgaflow.tasks.errors import PipelineStepError
    from fpgaflow.tasks.packaging.image_build import build_image

    echo = (lambda line: None) if args.quiet or args.json else (lambda line: print(line, file=sys.stderr))
    try:
        result = build_image(args.service_dir, base_image=args.base_image, tag=args.tag, output_dir=args.output_dir, on_line=echo)
    except PipelineStepError as error:
        print(f"fpgaflow image build: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({**asdict(result), "image": result.image}))
    elif result.built:
        image_id, size_bytes = result.image_id or "", result.size_bytes or 0
        print(
            f"built {result.tag} ({image_id[:19]}, {size_bytes / 1e6:.0f} MB) in {result.build_seconds} s; log {result.log_path}"
        )
    if not result.built:
        print(f"fpgaflow image build: {result.reason}", file=sys.stderr)
        return 1
    return 0
