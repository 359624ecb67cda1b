"""`fpgaflow deploy imagenet/NAME --calibration DIR`: the original quick start's default ImageNet classifier.

The run is the pipeline's own (``train_and_deploy`` with classifier 'imagenet'): register, convert, numerics
gate on the calibration images, package, deploy and smoke test; only the train step builds instead of trains.
"""

from __future__ import annotations

import argparse

from fpgaflow.flows.cli import UsageError

PREFIX = "imagenet/"
CLASSIFIER_FEATURIZERS = ("resnet50", "resnet152", "densenet121", "vgg16")


def is_imagenet_reference(reference: str) -> bool:
    return reference.startswith(PREFIX)


def deploy_imagenet(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from fpgaflow.flows.cli.run import labels_of, run_pipeline
    from fpgaflow.tasks.config import load_config

    name = args.reference[len(PREFIX) :]
    if name not in CLASSIFIER_FEATURIZERS:
        raise UsageError(
            f"no ImageNet classifier {args.reference!r}; there are {', '.join(PREFIX + n for n in CLASSIFIER_FEATURIZERS)}"
        )
    if args.calibration is None:
        raise UsageError(
            f"{args.reference} needs --calibration DIR: a few of your own photographs (any folder layout) to calibrate "
            "int8 and to compare each numeric format's top-1/top-5 with fp32 (there is no labelled ImageNet data here)"
        )
    try:
        config = load_config(
            None,
            data_dir=args.calibration,
            model_name=f"imagenet-{name}",
            featurizer=name,
            weights="imagenet",
            classifier="imagenet",
            input_size=args.input_size,
            numerics=args.numerics,
            target=args.target or "local",
            replicas=args.replicas,
            base_image=args.base_image,
            **labels_of(args),
        )
    except ValidationError as error:
        raise UsageError("; ".join(f"{'.'.join(map(str, item['loc']))}: {item['msg']}" for item in error.errors())) from None

    from fpgaflow.tasks.featurizers.weights_manifest import CLASS_INDEX
    from fpgaflow.tasks.featurizers.weights_store import choose_weights, manifest_of, obtain
    from fpgaflow.tasks.settings import get_pipeline_settings

    # Files that cannot be had end the command here (exit code 2), before any step (or TensorFlow) starts.
    weights = choose_weights("imagenet", name, include_top=True)
    obtain(manifest_of(get_pipeline_settings()).get(CLASS_INDEX))

    return run_pipeline(config, weights, "fpgaflow deploy", args.json)
