"""`fpgaflow bench`: latency, throughput and memory side by side (see benchmarks/README.md)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    bench = subparsers.add_parser(
        "bench", help="Benchmark batch-1 serving against in-process TensorFlow, onnxruntime and the machine's limit."
    )
    bench.add_argument("--out", type=Path, required=True, help="Directory for results.json, results.md and the charts.")
    bench.add_argument(
        "--quick", action="store_true", help="A much smaller run (32 px input, short windows, concurrency 1 and 2)."
    )
    bench.add_argument("--skip-pipeline", action="store_true", help="Do not time the end-to-end pipeline on the sample data.")
    bench.set_defaults(handler=_bench)


def _bench(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from fpgaflow.benchmarks.harness import FULL, QUICK, run_benchmark
    from fpgaflow.tasks.settings import get_pipeline_settings

    plan = QUICK if args.quick else FULL
    if args.skip_pipeline:
        plan = replace(plan, pipeline=False)
    results = run_benchmark(args.out, plan, get_pipeline_settings())
    for target in results["targets"]:
        verdict = "PASS" if target["pass"] else "FAIL"
        print(
            f"{verdict}  {target['name']}: {target['value']:.2f} "
            f"(limit {target['comparison']} {target['limit']:g}) - {target['meaning']}"
        )
    print(f"results: {Path(args.out) / 'results.json'}")
    return 0
