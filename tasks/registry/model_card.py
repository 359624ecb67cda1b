"""The model card: a short markdown summary of one model version (data, metrics, numerics, limits).

It becomes the registry description of the version (what a reviewer reads in the MLflow UI)
and the run's ``model_card.md`` artifact. The registry fills it from the facts the MLflow run
already holds, so each fact keeps one source.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict

MAX_DESCRIPTION_CHARS = 5000
MAX_TAG_VALUE_CHARS = 5000
MAX_CLASSES_LISTED = 20  # the ImageNet classifier's 1,000 names would crowd out the rest of the card


class Gate(BaseModel):
    """One check a version must pass before it may become ``candidate`` or ``champion``."""

    model_config = ConfigDict(frozen=True)

    name: str
    passed: bool
    detail: str

    @property
    def verdict(self) -> str:
        return "passed" if self.passed else "failed"

    def tag_value(self) -> str:
        """``passed: <detail>`` / ``failed: <detail>``, as run and version tags record a gate."""
        return f"{self.verdict}: {self.detail}"[:MAX_TAG_VALUE_CHARS]


class ModelCard(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    version: str
    dataset_fingerprint: str = ""
    flow_run_id: str = ""  # the Prefect flow run that produced the version
    flow_run_url: str = ""  # its page in the Prefect UI
    split_sizes: Mapping[str, int] = {}
    class_names: tuple[str, ...] = ()
    featurizer: str = "unknown"
    weights: str = "unknown"
    weights_note: str = ""
    input_size: str = "?"
    parameter_count: int | None = None
    mac_count: int | None = None
    test_metrics: Mapping[str, float] = {}
    numeric_format: str = ""
    numerics: Mapping[str, tuple[float, float]] = {}
    gates: tuple[Gate, ...] = ()
    description: str = ""
    labels: Mapping[str, str] = {}

    def _data(self) -> list[str]:
        lines = [f"- dataset fingerprint: `{self.dataset_fingerprint or 'unknown'}`"]
        if self.flow_run_id:
            run = f"[`{self.flow_run_id}`]({self.flow_run_url})" if self.flow_run_url else f"`{self.flow_run_id}`"
            lines.append(f"- produced by Prefect flow run {run}")
        if self.split_sizes:
            lines.append(
                "- images per split: " + ", ".join(f"{split} {count}" for split, count in sorted(self.split_sizes.items()))
            )
        if self.class_names:
            shown = self.class_names[:MAX_CLASSES_LISTED]
            more = len(self.class_names) - len(shown)
            lines.append(f"- {len(self.class_names)} classes: " + ", ".join(shown) + (f" and {more} more" if more else ""))
        return lines

    def _model(self) -> list[str]:
        facts = [f"weights `{self.weights}`", f"input {self.input_size}x{self.input_size}"]
        if self.parameter_count is not None:
            facts.append(f"{self.parameter_count / 1e6:.2f} M parameters")
        if self.mac_count is not None:
            facts.append(f"{self.mac_count / 1e9:.3f} GMAC per image")
        lines = [f"- featurizer `{self.featurizer}` ({', '.join(facts)})"]
        return lines + ([f"- featurizer weights: {self.weights_note}"] if self.weights_note else [])

    def _metrics(self) -> list[str]:
        if not self.test_metrics:
            return ["- no test metrics recorded"]
        ordered = sorted(self.test_metrics.items(), key=lambda item: (item[0] != "accuracy", item[0]))
        return ["- test split: " + ", ".join(f"{name} {value:.4f}" for name, value in ordered)]

    def _numerics(self) -> list[str]:
        if not self.numeric_format:
            return ["- pending: conversion and numerics have not run for this version yet"]
        return [f"- served in `{self.numeric_format}`"] + [
            f"- `{numeric_format}`: accuracy {accuracy:.4f}, delta to fp32 {delta * 100:+.2f} points"
            for numeric_format, (accuracy, delta) in self.numerics.items()
        ]

    def _limits(self) -> list[str]:
        lines = [
            "- classifies into the classes above only; any other image is still forced into one of them",
            "- metrics come from one held-out split of one dataset; expect lower accuracy on other data",
            "- FPGA numerics are emulated on the CPU: accuracy matches the device format, speed does not",
        ]
        if self.weights == "none":
            lines.append("- featurizer weights were randomly initialised (weights `none`), not pretrained")
        return lines

    def markdown(self) -> str:
        sections = {
            "Data": self._data(),
            "Model": self._model(),
            "Metrics": self._metrics(),
            "Numeric format": self._numerics(),
            "Gates": [f"- {gate.name} {gate.verdict.upper()}: {gate.detail}" for gate in self.gates],
            "Limits": self._limits(),
        }
        parts = [f"# {self.name} version {self.version}"]
        if self.description:
            parts.append(self.description.strip())
        if self.labels:
            parts.append("Tags: " + ", ".join(f"`{key}={value}`" for key, value in self.labels.items()))
        parts += [f"## {title}\n" + "\n".join(lines) for title, lines in sections.items() if lines]
        text = "\n\n".join(parts) + "\n"
        return text if len(text) <= MAX_DESCRIPTION_CHARS else text[: MAX_DESCRIPTION_CHARS - 1] + "…"
