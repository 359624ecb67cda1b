"""The numerics gate and the serve format: each format's accuracy against fp32, then the format to deploy.

Each format has its own allowed drop (:func:`fpgaflow.tasks.numerics.outcome.drop_limits`: 1 point for
int8 and msfp9, 2 for msfp8 by default). Among the formats that pass, ``serve_format: auto`` serves the
one with the lowest *modelled* latency on the deployment's device profile, the hardware that will run
it; on the ``cpu`` profile, where no FPGA runs it, the one this CPU runs fastest (measured at batch 1).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from fpgaflow.tasks.errors import PipelineStepError
from fpgaflow.tasks.numerics.formats import REFERENCE_FORMAT, numerics_for
from fpgaflow.tasks.numerics.latency import CPU_PROFILE, FormatLatency

AUTO = "auto"
# Accuracies are fractions of a finite test set; a drop equal to the limit passes despite float noise.
GATE_SLACK = 1e-9


class NumericsGateError(PipelineStepError):
    """The requested serve format did not pass its accuracy gate (or was not evaluated)."""


@dataclass(frozen=True)
class FormatGateResult:
    """One format's test accuracy against fp32; ``delta`` = accuracy - fp32 accuracy (negative = a drop)."""

    name: str
    accuracy: float
    reference_accuracy: float
    delta: float
    passed: bool
    message: str
    max_drop: float = 0.0

    def summary(self) -> dict:
        return {"accuracy": self.accuracy, "delta": self.delta, "passed": self.passed}


@dataclass(frozen=True)
class ServeChoice:
    """The format to deploy and why, in words a user reads in the run's output."""

    format: str
    reason: str


def gate_formats(accuracies: Mapping[str, float], max_drop: float | Mapping[str, float]) -> dict[str, FormatGateResult]:
    """Each format's delta to fp32 and whether it stays within its allowed drop (a fraction of top-1):
    ``max_drop`` for every format, or per format name."""
    if REFERENCE_FORMAT not in accuracies:
        raise PipelineStepError(
            f"the accuracy gate compares every format with {REFERENCE_FORMAT}; evaluate {REFERENCE_FORMAT} too"
        )
    limits = {name: _limit(max_drop, name) for name in accuracies}
    for name, accuracy in accuracies.items():
        numerics_for(name)
        if not (math.isfinite(accuracy) and 0 <= accuracy <= 1):
            raise PipelineStepError(f"accuracy of {name} must be a fraction between 0 and 1, got {accuracy}")
    reference = float(accuracies[REFERENCE_FORMAT])
    results = {}
    for name, accuracy in accuracies.items():
        delta = float(accuracy) - reference
        drop, limit = -delta, limits[name]
        passed = drop <= limit + GATE_SLACK
        if passed:
            message = (
                f"{name}: top-1 {accuracy:.4f}, {_points(delta)} vs {REFERENCE_FORMAT} {reference:.4f}, "
                f"within the allowed drop of {limit * 100:.2f} points"
            )
        else:
            message = (
                f"{name} fails the accuracy gate: top-1 {accuracy:.4f} is {drop * 100:.2f} points below "
                f"{REFERENCE_FORMAT} {reference:.4f}; at most {limit * 100:.2f} points are allowed "
                f"(max_accuracy_drop {limit:g})"
            )
        results[name] = FormatGateResult(name, float(accuracy), reference, delta, passed, message, limit)
    return results


def _limit(max_drop: float | Mapping[str, float], name: str) -> float:
    if isinstance(max_drop, Mapping):
        if name not in max_drop:
            raise PipelineStepError(f"no allowed accuracy drop is set for {name} (set for: {', '.join(max_drop) or 'none'})")
        limit = float(max_drop[name])
    else:
        limit = float(max_drop)
    if not (math.isfinite(limit) and 0 <= limit <= 1):
        raise PipelineStepError(f"max accuracy drop of {name} must be a fraction between 0 and 1, got {limit}")
    return limit


def _points(delta: float) -> str:
    return f"{abs(delta) * 100:.2f} points {'below' if delta < 0 else 'above'}" if delta else "equal"


def choose_serve_format(
    results: Mapping[str, FormatGateResult],
    latencies: Mapping[str, FormatLatency],
    requested: str = AUTO,
    device_profile: str = CPU_PROFILE,
) -> ServeChoice:
    """The format to serve and why.

    ``auto``: among the formats that passed, the lowest modelled latency on ``device_profile`` (ties: the lower
    measured latency); on the ``cpu`` profile, or where no passing format has a modelled latency, the lowest
    measured latency. Any other ``requested`` format is served if it passed its gate.
    """
    if requested != AUTO:
        if requested not in results:
            raise NumericsGateError(
                f"serve format {requested!r} was not evaluated (evaluated: {', '.join(results) or 'none'}); "
                "add it to the numerics list"
            )
        if not results[requested].passed:
            raise NumericsGateError(f"cannot serve {requested}: {results[requested].message}")
        return ServeChoice(
            requested, f"{requested}: as configured (serve_format: {requested}); {_figures(requested, results, latencies)}"
        )
    passed = [name for name, result in results.items() if result.passed]
    if not passed:
        raise NumericsGateError(
            f"no evaluated format passed its accuracy gate ({', '.join(results) or 'none evaluated'}); "
            f"evaluate {REFERENCE_FORMAT}, which always passes"
        )
    missing = [name for name in passed if name not in latencies]
    if missing:
        raise PipelineStepError(f"choosing the serve format needs the latency of every format that passed; none for {missing}")
    modelled = [name for name in passed if latencies[name].modelled_ms is not None]
    if device_profile != CPU_PROFILE and modelled:
        chosen = min(modelled, key=lambda name: (latencies[name].modelled_ms, latencies[name].measured_ms))
        why = f"lowest modelled latency on {device_profile} among the formats that passed their gate"
    else:
        chosen = min(passed, key=lambda name: latencies[name].measured_ms)
        why = "fastest measured on this CPU at batch 1 among the formats that passed their gate"
    others = [f"{name} {_figures(name, results, latencies)}" for name in passed if name != chosen]
    failed = [f"{name} ({_over_limit(results[name])})" for name in results if name not in passed]
    reason = f"{chosen}: {why}; {_figures(chosen, results, latencies)}"
    if others:
        reason += "; passed too: " + ", ".join(others)
    if failed:
        reason += "; failed: " + ", ".join(failed)
    return ServeChoice(chosen, reason)


def _over_limit(result: FormatGateResult) -> str:
    return f"{-result.delta * 100:.2f} points below {REFERENCE_FORMAT}, over its limit of {result.max_drop * 100:g} points"


def _figures(name: str, results: Mapping[str, FormatGateResult], latencies: Mapping[str, FormatLatency]) -> str:
    parts = []
    latency = latencies.get(name)
    if latency is not None:
        parts.append(f"modelled {latency.modelled_ms:.3f} ms" if latency.modelled_ms is not None else "not modelled")
        parts.append(f"measured {latency.measured_ms:.1f} ms")
    parts.append(f"accuracy delta {results[name].delta * 100:+.2f} points")
    return "(" + ", ".join(parts) + ")"


def gate_table(results: Mapping[str, FormatGateResult], latencies: Mapping[str, FormatLatency] | None = None) -> list[dict]:
    """One row per format: accuracy, delta, limit, verdict and, when measured, the latencies."""
    rows = []
    for name, result in results.items():
        row: dict = {
            "format": name,
            "accuracy": round(result.accuracy, 4),
            "delta": round(result.delta, 4),
            "max_drop": result.max_drop,
            "passed": result.passed,
        }
        if latencies is not None and name in latencies:
            row.update(latencies[name].summary())
        row["message"] = result.message
        rows.append(row)
    return rows
