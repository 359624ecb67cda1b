"""`fpgaflow run`: the main job, the whole pipeline from one command."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from flows.cli import UsageError


def register(subparsers) -> None:
    run = subparsers.add_parser("run", help="Run the pipeline on a folder-per-class dataset (the main job).")
    run.add_argument("data_dir", type=Path)
    run.add_argument("--config", type=Path, help="YAML file with pipeline settings (see README).")
    run.add_argument("--until", choices=["validate", "train", "package", "deploy"], help="Last step to run (default: deploy).")
    run.add_argument("--json", action="store_true", help="End with one JSON line summarising the run.")
    run.add_argument("--model-name", help="Registered model name (default: the data folder's name).")
    run.add_argument("--featurizer", help="resnet50, resnet152, densenet121, vgg16 or ssd_vgg.")
    run.add_argument("--weights", help="imagenet, none (seeded random init) or a weights file path.")
    run.add_argument("--input-size", type=int, help="Square input side in pixels (default 224).")
    run.add_argument("--seed", type=int)
    run.add_argument("--epochs", type=int, dest="training.epochs")
    run.add_argument("--batch-size", type=int, dest="training.batch_size")
    run.add_argument("--learning-rate", type=float, dest="training.learning_rate")
    run.add_argument("--hidden-units", type=int, dest="training.hidden_units", help="0 = linear head.")
    run.add_argument("--mode", choices=["head", "full"], dest="training.mode")
    run.add_argument("--numerics", type=lambda text: tuple(part.strip() for part in text.split(",") if part.strip()),
                     help="Comma-separated numeric formats to evaluate, e.g. fp32,int8,msfp9.")
    run.add_argument("--serve-format", help="Format to package and deploy (default: auto).")
    run.add_argument("--target", choices=["local", "docker", "kubernetes"])
    run.add_argument("--replicas", type=int)
    run.add_argument("--base-image", help="Base image of the serving image.")
    run.set_defaults(handler=_run)


OVERRIDES = ("until", "model_name", "featurizer", "weights", "input_size", "seed", "numerics", "serve_format",
             "target", "replicas", "base_image", "training.epochs", "training.batch_size", "training.learning_rate",
             "training.hidden_units", "training.mode")


def _run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from tasks.config import load_config
    from tasks.errors import PipelineStepError

    try:
        config = load_config(args.config, data_dir=args.data_dir, **{key: getattr(args, key) for key in OVERRIDES})
    except ValidationError as error:
        raise UsageError("invalid pipeline configuration: " + "; ".join(
            f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}" for item in error.errors())) from None

    from flows.train_and_deploy import train_and_deploy

    try:
        summary = train_and_deploy(config)
    except PipelineStepError as error:
        print(f"fpgaflow run: {error}")
        return 1
    if args.json:
        print(json.dumps(summary, default=str))
    else:
        for key, value in summary.items():
            print(f"{key}: {value}")
        print_next_steps(summary, config.data_dir)
    return 0


def _sample_image(data_dir: Path) -> Path | None:
    return next((path for path in sorted(data_dir.glob("*/*")) if path.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp")), None)


def print_next_steps(summary: dict, data_dir: Path) -> None:
    """Where the results are: the service's answer for a sample image, and the two UIs."""
    from fpga_runtime.settings import get_settings

    settings = get_settings()
    endpoint, image = summary.get("endpoint"), _sample_image(data_dir)
    if endpoint and image is not None:
        from fpga_runtime.client import PredictionClient
        from tasks.monitoring import parse_endpoint

        keys = settings.server_api_keys
        with PredictionClient(*parse_endpoint(endpoint), access_token=keys[0] if keys else None) as client:
            top5 = client.top_k(client.score_file(image), k=5)
        print(f"\nthe service at {endpoint} answers for {image.relative_to(data_dir)}:")
        for label, probability in top5:
            print(f"  {label:>12}  {probability:.4f}")
        print(f"score your own: fpgaflow score IMAGE --address {endpoint}; stop it: fpgaflow cluster down")
    print("\nsee the run in the Prefect UI:  PREFECT_HOME=" + str(settings.home / "prefect")
          + " prefect server start   (then http://127.0.0.1:4200/runs)")
    if "model_name" in summary:
        print(f"review the model in MLflow:     mlflow/start-local-ui   (then http://127.0.0.1:5000/#/models/{summary['model_name']})")
