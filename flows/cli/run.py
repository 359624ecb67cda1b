"""`fpgaflow run`: the main job, the whole pipeline from one command."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from fpgaflow.flows.cli import UsageError

if TYPE_CHECKING:
    from fpgaflow.tasks.config import PipelineConfig
    from fpgaflow.tasks.featurizers.weights_store import WeightsChoice


def register(subparsers) -> None:
    run = subparsers.add_parser(
        "run",
        help="Run the pipeline on a folder-per-class dataset, or a detection dataset with --featurizer ssd_vgg (the main job).",
    )
    run.add_argument("data_dir", type=Path)
    run.add_argument("--config", type=Path, help="YAML file with pipeline settings (see README).")
    run.add_argument("--until", choices=["validate", "train", "package", "deploy"], help="Last step to run (default: deploy).")
    run.add_argument("--json", action="store_true", help="End with one JSON line summarising the run.")
    run.add_argument("--model-name", help="Registered model name (default: the data folder's name).")
    run.add_argument("--featurizer", help="resnet50, resnet152, densenet121, vgg16 or ssd_vgg.")
    run.add_argument(
        "--weights",
        help="imagenet (default; downloaded once and verified), auto (imagenet when it can be had, else seeded "
        "random init, said so), none (seeded random init) or a weights file path.",
    )
    run.add_argument("--input-size", type=int, help="Square input side in pixels (default 224; 300 for ssd_vgg).")
    run.add_argument("--seed", type=int)
    run.add_argument("--epochs", type=int, dest="training.epochs")
    run.add_argument("--batch-size", type=int, dest="training.batch_size")
    run.add_argument("--learning-rate", type=float, dest="training.learning_rate")
    run.add_argument("--hidden-units", type=int, dest="training.hidden_units", help="0 = linear head.")
    run.add_argument("--mode", choices=["head", "full"], dest="training.mode")
    run.add_argument(
        "--numerics",
        type=lambda text: tuple(part.strip() for part in text.split(",") if part.strip()),
        help="Comma-separated numeric formats to evaluate, e.g. fp32,int8,msfp9.",
    )
    run.add_argument("--serve-format", help="Format to package and deploy (default: auto).")
    run.add_argument(
        "--device-profile",
        help="Device profile 'auto' chooses the serve format for (a profile name or .yaml, or cpu; "
        "default: the device_profile setting).",
    )
    run.add_argument("--target", choices=["local", "docker", "kubernetes"])
    run.add_argument("--replicas", type=int)
    run.add_argument("--base-image", help="Base image of the serving image.")
    add_label_arguments(run)
    add_quiet_argument(run)
    detection = run.add_argument_group("detection (featurizer ssd_vgg)")
    detection.add_argument(
        "--detection-width",
        type=float,
        dest="detection.width",
        help="Channel multiplier of the detector's convolutions (default 1.0 = SSD300).",
    )
    detection.add_argument(
        "--feature-maps",
        type=int,
        dest="detection.feature_maps",
        help="SSD feature maps used, 1 to 6 (default: as many as the input size allows).",
    )
    detection.add_argument(
        "--score-threshold",
        type=float,
        dest="detection.score_threshold",
        help="Class scores at or below this are never detections (default 0.01).",
    )
    detection.add_argument(
        "--iou-threshold", type=float, dest="detection.iou_threshold", help="Non-maximum suppression IoU (default 0.45)."
    )
    detection.add_argument(
        "--max-detections", type=int, dest="detection.max_detections", help="Detections returned per image (default 100)."
    )
    for action in run._actions:
        if "." in action.dest and action.metavar is None:  # a nested config key: show EPOCHS, not TRAINING.EPOCHS
            action.metavar = action.dest.rsplit(".", 1)[1].upper()
    run.set_defaults(handler=_run)


def _key_value(text: str) -> tuple[str, str]:
    key, separator, value = text.partition("=")
    if not separator or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value


def add_label_arguments(parser: argparse.ArgumentParser) -> None:
    """``--tag KEY=VALUE`` (repeatable) and ``--description``: labels of the model version a command registers."""
    parser.add_argument(
        "--tag",
        dest="tags",
        action="append",
        type=_key_value,
        metavar="KEY=VALUE",
        help="Tag the registered model version (repeatable); shown in the MLflow UI and `fpgaflow models show`.",
    )
    parser.add_argument("--description", help="What the registered model version is; first in its model card.")


def add_quiet_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="No progress output (bars, a line per epoch or batch); the same as FPGAFLOW_PROGRESS=false.",
    )


def labels_of(args: argparse.Namespace) -> dict:
    """The config overrides of ``--tag`` and ``--description`` (None where not given)."""
    return {"tags": dict(args.tags) if args.tags else None, "description": args.description}


OVERRIDES = (
    "until",
    "model_name",
    "featurizer",
    "weights",
    "input_size",
    "seed",
    "numerics",
    "serve_format",
    "device_profile",
    "target",
    "replicas",
    "base_image",
    "training.epochs",
    "training.batch_size",
    "training.learning_rate",
    "training.hidden_units",
    "training.mode",
    "detection.width",
    "detection.feature_maps",
    "detection.score_threshold",
    "detection.iou_threshold",
    "detection.max_detections",
)


def _run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from fpgaflow.tasks.config import load_config

    try:
        config = load_config(
            args.config, data_dir=args.data_dir, **{key: getattr(args, key) for key in OVERRIDES}, **labels_of(args)
        )
    except ValidationError as error:
        raise UsageError(
            "invalid pipeline configuration: "
            + "; ".join(f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}" for item in error.errors())
        ) from None

    from fpgaflow.tasks.featurizers.weights_store import choose_weights

    # Weights that cannot be had end the command here (exit code 2), before any step (or TensorFlow) starts.
    weights = (
        None if config.until == "validate" else choose_weights(config.weights, config.featurizer, include_top=config.imagenet_top)
    )

    return run_pipeline(config, weights, "fpgaflow run", args.json)


def run_pipeline(config: PipelineConfig, weights: WeightsChoice | None, command: str, as_json: bool) -> int:
    """The pipeline flow run with ``config``, its summary printed (JSON, or lines and the next steps); 1 when a step fails."""
    from fpgaflow.flows.train_and_deploy import train_and_deploy
    from fpgaflow.tasks.errors import PipelineStepError

    try:
        summary = train_and_deploy(config, weights)
    except PipelineStepError as error:
        print(f"{command}: {error}")
        return 1
    if as_json:
        print(json.dumps(summary, default=str))
    else:
        for key, value in summary.items():
            print(f"{key}: {value}")
        print_next_steps(summary, config)
    return 0


def _sample_image(data_dir: Path) -> Path | None:
    return next((path for path in sorted(data_dir.rglob("*")) if path.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp")), None)


def _answer_lines(client, image: Path, detects: bool) -> list[str]:
    """What the service says about ``image``: the top-5 classes, or the detections a user would see."""
    if not detects:
        return [f"  {label:>12}  {probability:.4f}" for label, probability in client.top_k(client.score_file(image), k=5)]
    from fpgaflow.flows.cli.serving import DEFAULT_MIN_SCORE

    shown = client.detect_file(image).above(DEFAULT_MIN_SCORE).to_dict()[:5]
    return [f"  {item['label']:>12}  {item['score']:.4f}  box [ymin, xmin, ymax, xmax] {item['box']}" for item in shown] or [
        f"  no detection scores {DEFAULT_MIN_SCORE} or more"
    ]


def print_next_steps(summary: dict, config: PipelineConfig) -> None:
    """Where the results are: the service's answer for a sample image, and the two UIs."""
    from fpgaflow.tasks.settings import get_pipeline_settings

    settings = get_pipeline_settings()
    data_dir = config.data_dir
    endpoint, image = summary.get("endpoint"), _sample_image(data_dir)
    if endpoint and image is not None:
        from fpgaflow.fpga_runtime.client import PredictionClient
        from fpgaflow.tasks.operations.monitoring import parse_endpoint

        keys = settings.server_api_keys
        with PredictionClient(*parse_endpoint(endpoint), access_token=keys[0] if keys else None) as client:
            lines = _answer_lines(client, image, config.detects)
        print(f"\nthe service at {endpoint} answers for {image.relative_to(data_dir)}:")
        print("\n".join(lines))
        score = "fpgaflow score IMAGE --detect" if config.detects else "fpgaflow score IMAGE"
        print(f"score your own: {score} --address {endpoint}; stop it: fpgaflow cluster down")
    print("\nsee the run in the Prefect UI:  fpgaflow ui prefect   (then http://127.0.0.1:4200/runs)")
    if "model_name" in summary:
        name = summary["model_name"]
        print(f"review the model in MLflow:     fpgaflow ui mlflow    (then http://127.0.0.1:5000/#/models/{name})")
        print(f"its versions, images, services: fpgaflow models show {name}")
