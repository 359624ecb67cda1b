"""Commands about FPGA numeric formats: list them, prepare a featurizer graph in one, compare them."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(subparsers) -> None:
    numerics = subparsers.add_parser("numerics", help="FPGA numeric formats: list, prepare a graph, compare formats.")
    commands = numerics.add_subparsers(dest="numerics_command", required=True, metavar="ACTION")

    listing = commands.add_parser("formats", help="The numeric formats and the bits a weight takes in each.")
    listing.add_argument("--block-size", type=int, default=None, help="Shared-exponent block size of msfp formats (default 16).")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_formats)

    prepare = commands.add_parser(
        "prepare", help="Write an fp32 featurizer graph (input 'input' [N,H,W,3]) prepared in a numeric format."
    )
    prepare.add_argument("model", type=Path, metavar="MODEL.onnx")
    prepare.add_argument("--format", required=True, dest="format_name", help="fp32, int8, msfp8 or msfp9.")
    prepare.add_argument("--output", "-o", type=Path, required=True, metavar="OUT.onnx")
    prepare.add_argument("--block-size", type=int, default=None, help="Shared-exponent block size of msfp formats (default 16).")
    prepare.add_argument(
        "--calibration",
        type=Path,
        default=None,
        metavar="IMAGE_DIR",
        help="Training images int8 calibrates on and msfp bias correction measures input means on (required for both).",
    )
    prepare.set_defaults(handler=_prepare)

    compare = commands.add_parser(
        "compare",
        help="Features (and predictions) of each format vs fp32 on images, and onnxruntime latency at batch 1.",
        description="int8 is calibrated on the same images it is compared on.",
    )
    compare.add_argument("model", type=Path, metavar="MODEL.onnx")
    compare.add_argument("--images", type=Path, required=True, metavar="IMAGE_DIR")
    compare.add_argument("--formats", default="fp32,int8,msfp8,msfp9", help="Comma-separated formats (fp32 is always included).")
    compare.add_argument("--block-size", type=int, default=None)
    compare.add_argument(
        "--cpu-stage",
        type=Path,
        default=None,
        metavar="HEAD.onnx",
        help="Classifier graph (input 'features') to compare predictions and top-1 agreement.",
    )
    compare.add_argument("--limit", type=int, default=64, help="Images used, at most (default 64).")
    compare.add_argument("--repeats", type=int, default=50, help="Timed batch-1 runs per format (default 50).")
    compare.add_argument(
        "--per-layer",
        action="store_true",
        help="Instead: each Conv/Gemm/MatMul layer's SQNR (dB) vs fp32 per format, as a table and a PNG.",
    )
    compare.add_argument(
        "--plot",
        type=Path,
        default=None,
        metavar="OUT.png",
        help="With --per-layer: where the PNG goes (default: per_layer_sqnr.png beside MODEL.onnx).",
    )
    compare.add_argument("--json", action="store_true")
    compare.set_defaults(handler=_compare)


def _formats(args: argparse.Namespace) -> int:
    from fpgaflow.fpga_runtime.numerics import FORMATS, numeric_format

    formats = [numeric_format(name, args.block_size) for name in FORMATS]
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "name": fmt.name,
                        "kind": fmt.kind,
                        "bits_per_weight": fmt.bits_per_weight,
                        "mantissa_bits": fmt.mantissa_bits,
                        "exponent_bits": fmt.exponent_bits,
                        "block_size": fmt.block_size,
                        "description": fmt.description,
                    }
                    for fmt in formats
                ]
            )
        )
    else:
        for fmt in formats:
            print(f"{fmt.name:<6} {fmt.bits_per_weight:>7.4g} bits/weight  {fmt.description}")
    return 0


def _input_size(model_path: Path) -> int:
    import onnx

    from fpgaflow.flows.cli import UsageError

    model = onnx.load(model_path, load_external_data=False)
    dims = [dim.dim_value for dim in model.graph.input[0].type.tensor_type.shape.dim]
    if len(dims) != 4 or dims[1] != dims[2] or dims[1] <= 0:
        raise UsageError(f"{model_path} must take square images [N, H, W, 3] as its first input, has dims {dims}")
    return dims[1]


def _prepare(args: argparse.Namespace) -> int:
    import numpy as np

    from fpgaflow.flows.cli import UsageError
    from fpgaflow.tasks.errors import PipelineStepError
    from fpgaflow.tasks.numerics.formats import images_in, prepare_format_file
    from fpgaflow.tasks.settings import get_pipeline_settings

    if not args.model.is_file():
        raise FileNotFoundError(f"no such ONNX file: {args.model}")
    if args.calibration is None and _needs_calibration(args.format_name):
        raise UsageError(f"{args.format_name} calibrates on training images: pass --calibration IMAGE_DIR")
    try:
        calibration = (
            images_in(args.calibration, _input_size(args.model), get_pipeline_settings().int8_calibration_images)
            if args.calibration
            else np.zeros((0, 1, 1, 3), np.float32)
        )
        output = prepare_format_file(args.model, args.format_name, args.output, calibration, args.block_size)
    except (PipelineStepError, ValueError) as error:
        raise UsageError(str(error)) from None
    print(f"wrote {output} ({args.format_name})")
    return 0


def _needs_calibration(format_name: str) -> bool:
    from fpgaflow.fpga_runtime.numerics import FORMATS
    from fpgaflow.tasks.settings import get_pipeline_settings

    kind = FORMATS[format_name].kind if format_name in FORMATS else None
    return kind == "int8" or (kind == "block_float" and get_pipeline_settings().msfp_bias_correction)


def _compare(args: argparse.Namespace) -> int:
    import onnx

    from fpgaflow.flows.cli import UsageError
    from fpgaflow.tasks.errors import PipelineStepError
    from fpgaflow.tasks.numerics.formats import (
        compare_formats,
        format_names,
        images_in,
        numerics_for,
        onnx_classifier,
        prepare_model,
    )

    if not args.model.is_file():
        raise FileNotFoundError(f"no such ONNX file: {args.model}")
    if args.limit < 1 or args.repeats < 1:
        raise UsageError("--limit and --repeats must be at least 1")
    if args.plot is not None and not args.per_layer:
        raise UsageError("--plot goes with --per-layer")
    try:
        names = format_names([name.strip() for name in args.formats.split(",") if name.strip()])
        images = images_in(args.images, _input_size(args.model), args.limit)
        model = onnx.load(args.model)
        prepared = {name: prepare_model(numerics_for(name, args.block_size), model, images) for name in names}
        if args.per_layer:
            return _per_layer(args, prepared, images)
        classifier = onnx_classifier(args.cpu_stage) if args.cpu_stage else None
        comparison = compare_formats(prepared, images, classifier, args.repeats)
    except (PipelineStepError, ValueError) as error:
        raise UsageError(str(error)) from None
    if args.json:
        print(json.dumps({"images": len(images), "formats": {name: result.summary() for name, result in comparison.items()}}))
        return 0
    print(f"{len(images)} images; differences against fp32; latency: median of {args.repeats} batch-1 runs", file=sys.stderr)
    print(f"{'format':<7} {'max |diff|':>11} {'scaled':>8} {'top-1 agree':>11} {'p50 ms':>8} {'x fp32':>7}")
    for name, result in comparison.items():
        agreement = f"{result.predictions.top1_agreement:.3f}" if result.predictions else "-"
        print(
            f"{name:<7} {result.features.max_abs_diff:>11.4g} {result.features.scaled_diff:>8.3g} {agreement:>11} "
            f"{result.latency_p50_ms:>8.2f} {result.latency_ratio:>7.2f}"
        )
    return 0


def _per_layer(args: argparse.Namespace, prepared: dict, images) -> int:
    from fpgaflow.tasks.numerics.formats import FEATURIZER_INPUT, REFERENCE_FORMAT
    from fpgaflow.tasks.numerics.layers import per_layer_sqnr, plot_sqnr, sqnr_json, sqnr_table

    if len(prepared) < 2:
        raise ValueError(f"--per-layer compares formats with {REFERENCE_FORMAT}: name at least one other in --formats")
    results = per_layer_sqnr(prepared, images, FEATURIZER_INPUT, REFERENCE_FORMAT)
    plot = plot_sqnr(results, args.plot or args.model.with_name("per_layer_sqnr.png"), f"{args.model.name}, {len(images)} images")
    if args.json:
        print(json.dumps({"images": len(images), "plot": str(plot), **sqnr_json(results)}))
        return 0
    print(f"{len(images)} images; SQNR (dB) of each layer's output vs {REFERENCE_FORMAT}, higher is closer", file=sys.stderr)
    print("\n".join(sqnr_table(results)))
    print(f"plot: {plot}", file=sys.stderr)
    return 0
