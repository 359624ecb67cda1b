"""results.md and the two PNG charts from a results dictionary (see :func:`fpgaflow.benchmarks.harness.run_benchmark`)."""

from __future__ import annotations

from pathlib import Path

LATENCY_CHART = "latency_by_configuration.png"
CONCURRENCY_CHART = "latency_vs_concurrency.png"


def _row(cells) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def markdown(results: dict) -> str:
    limit = results["machine_limit"]
    model = results["model"]
    lines = [
        f"Machine: {results['machine']['description']}.",
        f"Model: ResNet-50 ({model['weights']}) + softmax head, {model['input_size']}x{model['input_size']}, "
        f"{model['macs'] / 1e9:.2f} GMAC per image; every request is a {model['request_jpeg_bytes'] / 1000:.0f} kB JPEG, "
        "batch 1, preprocessing included.",
        "",
        "Windowed (perf_analyzer method: warm-up, windows until three agree within 10%):",
        "",
        _row(["configuration", "concurrency", "p50 ms", "p90 ms", "p99 ms", "throughput /s", "windows (stable)"]),
        _row(["---"] * 7),
    ]
    for name, levels in results["configurations"].items():
        for level in levels:
            lines.append(
                _row(
                    [
                        name,
                        level["concurrency"],
                        f"{level['p50_ms']:.1f}",
                        f"{level['p90_ms']:.1f}",
                        f"{level['p99_ms']:.1f}",
                        f"{level['throughput_per_second']:.1f}",
                        f"{level['windows']} ({'yes' if level['stable'] else 'no'})",
                    ]
                )
            )
    lines += [
        _row(
            [
                "machine limit fp32 (floor)",
                1,
                f"{limit['fp32_floor_ms']:.1f}",
                "",
                "",
                "",
                f"{limit['fp32_gflops']:.0f} GFLOP/s, {limit['fp32_source']}",
            ]
        ),
        _row(
            [
                "machine limit int8 (floor)",
                1,
                f"{limit['int8_floor_ms']:.1f}",
                "",
                "",
                "",
                f"{limit['int8_gops']:.0f} GOP/s, {limit['int8_source']}",
            ]
        ),
        "",
        "Side by side at concurrency 1 (one request of each configuration in turn, order rotated every round; "
        "the latency targets use these p50s):",
        "",
        _row(["configuration", "rounds", "p50 ms", "p90 ms", "p99 ms"]),
        _row(["---"] * 5),
        *[
            _row([name, row["rounds"], f"{row['p50_ms']:.1f}", f"{row['p90_ms']:.1f}", f"{row['p99_ms']:.1f}"])
            for name, row in results["side_by_side"].items()
        ],
        "",
        _row(["target", "value", "limit", "verdict", "what"]),
        _row(["---"] * 5),
    ]
    for target in results["targets"]:
        lines.append(
            _row(
                [
                    target["name"],
                    f"{target['value']:.2f}",
                    f"{target['comparison']} {target['limit']:g}",
                    "PASS" if target["pass"] else "FAIL",
                    target["meaning"],
                ]
            )
        )
    lines += ["", _row(["process", "peak RSS MB"]), _row(["---"] * 2)]
    lines += [_row([name, f"{value:.0f}"]) for name, value in results["memory_mb"].items()]
    lines += [
        "",
        _row(
            ["format", "devices", "modelled FPGA ms", "measured emulation ms (featurizer, in-process)", "vs fp32", "weights MB"]
        ),
        _row(["---"] * 6),
    ]
    fp32_ms = results["fpga_emulation"]["fp32"]["measured_emulation_ms"]
    for name, row in results["fpga_emulation"].items():
        devices = results["deployment"].get(name, {}).get("devices", "")
        lines.append(
            _row(
                [
                    name,
                    devices,
                    f"{row['modelled_device_ms']:.3f}",
                    f"{row['measured_emulation_ms']:.1f}",
                    f"{row['measured_emulation_ms'] / fp32_ms:.2f}",
                    f"{row['weight_mb']:.1f}",
                ]
            )
        )
    pipeline = results.get("pipeline")
    if pipeline:
        verdict = "succeeded" if pipeline["exit_code"] == 0 else f"failed with exit code {pipeline['exit_code']}"
        lines += [
            "",
            f"End-to-end pipeline: `{pipeline['command']}` on {pipeline['images']} images {verdict} in "
            f"{pipeline['seconds']:.0f} s.",
        ]
        runs = pipeline.get("runs", [])
        if runs:
            lines += ["", _row(["run", "images", "seconds", "peak RSS MB", "exit code"]), _row(["---"] * 5)]
            for run in runs:
                lines.append(
                    _row([run["what"], run["images"], f"{run['seconds']:.0f}", f"{run['peak_rss_mb']:.0f}", run["exit_code"]])
                )
    detection = results.get("detection_pipeline")
    if detection:
        verdict = "succeeded" if detection["exit_code"] == 0 else f"failed with exit code {detection['exit_code']}"
        found = f", test mAP@0.5 {detection['map50']:.3f}" if detection["map50"] is not None else ""
        lines += [
            "",
            f"Detection pipeline: `{detection['command']}` on {detection['images']} images {verdict} in "
            f"{detection['seconds']:.0f} s, peak RSS {detection['peak_rss_mb']:.0f} MB{found}.",
        ]
    return "\n".join(lines) + "\n"


def write_markdown(results: dict, path: Path) -> Path:
    Path(path).write_text(markdown(results))
    return Path(path)


def write_charts(results: dict, directory: Path) -> list[Path]:
    """Bars of p50 (whisker to p99) per configuration at concurrency 1 with the floors; p50 and throughput by concurrency."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    directory = Path(directory)
    names = list(results["configurations"])
    first = [results["configurations"][name][0] for name in names]
    figure, axis = pyplot.subplots(figsize=(9, 4.5))
    p50 = [level["p50_ms"] for level in first]
    axis.barh(names, p50, xerr=[[0] * len(first), [level["p99_ms"] - level["p50_ms"] for level in first]], color="tab:blue")
    for key, colour in (("fp32_floor_ms", "tab:red"), ("int8_floor_ms", "tab:green")):
        axis.axvline(results["machine_limit"][key], color=colour, linestyle="--", label=key.replace("_ms", "").replace("_", " "))
    axis.set_xlabel("batch-1 latency at concurrency 1, ms (bar p50, whisker to p99)")
    axis.invert_yaxis()
    axis.legend(loc="lower right")
    figure.tight_layout()
    latency_path = directory / LATENCY_CHART
    figure.savefig(latency_path, dpi=100)
    pyplot.close(figure)

    figure, (left, right) = pyplot.subplots(1, 2, figsize=(10, 4))
    for name in names:
        levels = results["configurations"][name]
        if len(levels) < 2:
            continue
        concurrency = [level["concurrency"] for level in levels]
        left.plot(concurrency, [level["p50_ms"] for level in levels], marker="o", label=name)
        right.plot(concurrency, [level["throughput_per_second"] for level in levels], marker="o", label=name)
    left.set(xlabel="concurrency", ylabel="p50 latency, ms", xscale="log", xticks=results["plan"]["levels"])
    right.set(xlabel="concurrency", ylabel="throughput, requests/s", xscale="log", xticks=results["plan"]["levels"])
    for axis in (left, right):
        axis.set_xticklabels([str(level) for level in results["plan"]["levels"]])
        axis.minorticks_off()
        axis.grid(True, alpha=0.3)
    left.legend(fontsize=8)
    figure.tight_layout()
    concurrency_path = directory / CONCURRENCY_CHART
    figure.savefig(concurrency_path, dpi=100)
    pyplot.close(figure)
    return [latency_path, concurrency_path]
