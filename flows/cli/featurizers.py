"""`fpgaflow featurizers`: the featurizers' facts at an input size, and a check that their weights load."""

from __future__ import annotations

import argparse
import json


def register(subparsers) -> None:
    featurizers = subparsers.add_parser(
        "featurizers",
        help="Feature size, parameters, MACs per image and preprocessing of each featurizer at an input size.",
        description="Builds each featurizer (ResNet-50/152, DenseNet-121, VGG-16) with the given weights; "
        "with --weights imagenet it also checks that the ImageNet weight files are in place.",
    )
    featurizers.add_argument("--name", action="append", help="Only this featurizer (repeatable); default: all.")
    featurizers.add_argument("--input-size", type=int, default=224, help="Square input side in pixels (default 224).")
    featurizers.add_argument("--weights", default="none", help="imagenet, none (seeded random init) or a weights file path.")
    featurizers.add_argument("--json", action="store_true", help="Print one JSON object per featurizer.")
    featurizers.set_defaults(handler=_featurizers)


def _featurizers(args: argparse.Namespace) -> int:
    from fpgaflow.flows.cli import UsageError
    from fpgaflow.tasks.errors import PipelineStepError
    from fpgaflow.tasks.featurizers.catalog import ARCHITECTURES, build_featurizer

    if args.input_size < 32:
        raise UsageError(f"--input-size must be at least 32, got {args.input_size}")
    for name in args.name or list(ARCHITECTURES):
        try:
            info = build_featurizer(name, args.weights, args.input_size).info
        except PipelineStepError as error:
            raise UsageError(str(error)) from None
        if args.json:
            print(json.dumps(info.model_dump(mode="json")))
        else:
            spec = info.preprocessing
            print(
                f"{info.name:12} input {info.input_size}x{info.input_size}  features {info.feature_dim:5}  "
                f"parameters {info.parameter_count:>12,}  {info.mac_count / 1e9:8.3f} GMAC/image  "
                f"{spec.channel_order} mean {spec.mean} std {spec.std}  weights {info.weights}"
            )
    return 0
