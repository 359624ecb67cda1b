"""Peak memory of the featurize + numerics path on synthetic images, in a process of its own.

``python -m fpgaflow.benchmarks.featurize_memory DATA_DIR --input-size N --numerics fp32,int8`` runs
what the pipeline runs between intake and packaging (the train step: ONNX featurization and the
head; the conversion step; the numerics step) in ``$FPGAFLOW_HOME``, without Prefect or MLflow,
and prints one JSON line: images, seconds and peak RSS in MB. :func:`write_synthetic_images` makes
the data.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from io import BytesIO
from pathlib import Path

import numpy as np

SYNTHETIC_CLASSES = 10


def write_synthetic_images(directory: Path, count: int, size: int, seed: int = 0) -> int:
    """``count`` JPEG files of ``size`` px in ``SYNTHETIC_CLASSES`` folders: smooth colour fields, a class-dependent tint."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    cell = max(1, size // 8)
    for index in range(count):
        label = index % SYNTHETIC_CLASSES
        coarse = rng.uniform(0, 200, (8, 8, 3)) + np.array([label * 5, 0, 50 - label * 5])
        pixels = np.clip(np.repeat(np.repeat(coarse, cell, axis=0), cell, axis=1)[:size, :size], 0, 255).astype(np.uint8)
        folder = directory / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        buffer = BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
        (folder / f"{index:06d}.jpg").write_bytes(buffer.getvalue())
    return count


def peak_rss_mb() -> float:
    """This process's peak resident set size (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_path(data_dir: Path, input_size: int, numerics: tuple[str, ...], epochs: int) -> dict:
    """Intake's split, then the train, conversion and numerics steps on ``data_dir``; their time and this process's peak RSS."""
    from fpgaflow.tasks.config import PipelineConfig, TrainingConfig
    from fpgaflow.tasks.conversion.onnx_stages import load_held_out_images
    from fpgaflow.tasks.data.manifest import build_manifest, dataset_fingerprint, stratified_split
    from fpgaflow.tasks.kinds.classifier import CLASSIFIER
    from fpgaflow.tasks.settings import get_pipeline_settings

    settings = get_pipeline_settings()
    work = settings.home / "featurize-memory"
    started = time.perf_counter()
    manifest = build_manifest(data_dir)
    splits = stratified_split(manifest, settings.validation_fraction, settings.test_fraction, settings.split_seed)
    class_names = sorted(splits["label"].unique())
    fingerprint = dataset_fingerprint(manifest)
    config = PipelineConfig(data_dir=data_dir, input_size=input_size, numerics=numerics, training=TrainingConfig(epochs=epochs))
    trained = CLASSIFIER.train(splits, class_names, fingerprint, config, work / "train")
    spec = trained.featurizer.preprocessing
    test_paths = list(splits.loc[splits["split"] == "test", "path"])
    conversion = CLASSIFIER.convert(
        trained.model_files.fpga_stage, trained.model_files.cpu_stage, load_held_out_images(test_paths, spec), work / "onnx"
    )
    outcome = CLASSIFIER.evaluate_numerics(
        conversion.fpga_onnx, conversion.cpu_onnx, splits, class_names, fingerprint, spec, config, work / "numerics"
    )
    return {
        "images": len(splits),
        "input_size": input_size,
        "numerics": list(numerics),
        "seconds": time.perf_counter() - started,
        "peak_rss_mb": peak_rss_mb(),
        "accuracy": {name: result.accuracy for name, result in outcome.results.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fpgaflow.benchmarks.featurize_memory", description=__doc__)
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--input-size", type=int, default=64)
    parser.add_argument("--numerics", default="fp32,int8")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args(argv)
    numerics = tuple(name for name in args.numerics.split(",") if name)
    result = run_path(args.data_dir.resolve(), args.input_size, numerics, args.epochs)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
