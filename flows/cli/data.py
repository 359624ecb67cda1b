"""Commands about the machine and the data: doctor, sample-data, validate."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers) -> None:
    doctor = subparsers.add_parser("doctor", help="What this machine offers the pipeline.")
    doctor.add_argument("--json", action="store_true", help="Print one JSON object instead of a table.")
    doctor.set_defaults(handler=_doctor)

    sample = subparsers.add_parser("sample-data", help="Write a real labelled image dataset (handwritten digits).")
    sample.add_argument("directory", type=Path)
    sample.add_argument("--size", type=int, default=64, help="Image side in pixels (default 64).")
    sample.add_argument("--per-class", type=int, default=None, help="At most this many images per class.")
    sample.add_argument(
        "--detection",
        action="store_true",
        help="Write a detection dataset instead: digits placed on larger noisy canvases, with their boxes "
        "(labels.txt, images/, annotations/*.json); --size and --per-class do not apply.",
    )
    sample.add_argument("--count", type=int, default=300, help="With --detection: how many images (default 300).")
    sample.add_argument("--digits", default="0123456789", help="With --detection: which digits appear (default 0123456789).")
    sample.set_defaults(handler=_sample_data)

    validate = subparsers.add_parser("validate", help="Validate a folder-per-class dataset; non-zero exit on failure.")
    validate.add_argument("directory", type=Path)
    validate.add_argument("--skip-unreadable", action="store_true", help="Exclude undecodable files (loudly) instead of failing.")
    validate.add_argument("--json", action="store_true")
    validate.add_argument(
        "--detection",
        action="store_true",
        help="The folder is a detection dataset (labels.txt, images/, annotations/ with JSON or Pascal VOC XML).",
    )
    validate.set_defaults(handler=_validate)


def _doctor(args: argparse.Namespace) -> int:
    from fpgaflow.flows.doctor import machine_report

    report = machine_report()
    if args.json:
        print(json.dumps(report))
    else:
        width = max(len(key) for key in report)
        for key, value in report.items():
            print(f"{key:<{width}}  {value}")
    return 0


def _sample_data(args: argparse.Namespace) -> int:
    if args.detection:
        return _sample_detection_data(args)
    from fpgaflow.tasks.data.sample_data import write_sample_data

    counts = write_sample_data(args.directory, size=args.size, per_class=args.per_class)
    print(f"wrote {sum(counts.values())} images in {len(counts)} classes to {args.directory}")
    return 0


def _sample_detection_data(args: argparse.Namespace) -> int:
    from fpgaflow.flows.cli import UsageError
    from fpgaflow.tasks.detection.sample_data import write_detection_sample_data

    if args.count < 1 or not args.digits or not set(args.digits) <= set("0123456789"):
        raise UsageError(f"--count must be at least 1 and --digits a selection of 0-9, got {args.count} and {args.digits!r}")
    counts = write_detection_sample_data(args.directory, count=args.count, digits=[int(digit) for digit in args.digits])
    print(f"wrote {args.count} images with {sum(counts.values())} objects of {len(counts)} labels to {args.directory}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from fpgaflow.tasks.data.intake import intake_dataset
    from fpgaflow.tasks.detection.intake import DetectionIntakeResult, intake_detection_dataset
    from fpgaflow.tasks.errors import DataValidationError
    from fpgaflow.tasks.settings import PipelineSettings

    settings = PipelineSettings(unreadable_policy="skip") if args.skip_unreadable else PipelineSettings()
    intake = intake_detection_dataset if args.detection else intake_dataset
    try:
        result = intake(args.directory, settings)
    except DataValidationError as error:
        print(f"fpgaflow validate: {error}")
        return 1
    if args.json:
        print(json.dumps(result.summary()))
    else:
        objects = f"{result.num_objects} objects, " if isinstance(result, DetectionIntakeResult) else ""
        print(
            f"{args.directory}: valid — {result.num_images} images, {objects}{result.num_classes} classes, "
            f"split {result.split_counts}, fingerprint {result.dataset_fingerprint[:16]}"
        )
        for item in result.skipped:
            print(f"  skipped {item.file}: {item.detail}")
    return 0
