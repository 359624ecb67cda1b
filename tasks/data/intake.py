"""Data intake: scan a folder-per-class dataset, validate it with Great Expectations, split it.

A failed validation stops the pipeline with a message naming each offending file and rule; the full
GX result is saved as JSON beside the manifest.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from fpgaflow.tasks.data.expectations import RULES, suite_parameters, validation_tables
from fpgaflow.tasks.data.manifest import build_manifest, dataset_fingerprint, stratified_split
from fpgaflow.tasks.errors import DataValidationError
from fpgaflow.tasks.files import write_text_atomic
from fpgaflow.tasks.settings import PipelineSettings, get_pipeline_settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Violation:
    rule: str
    file: str  # relpath of the offending file, or the class label for class-level rules
    detail: str


@dataclass
class IntakeResult:
    data_dir: str
    dataset_fingerprint: str
    num_images: int
    num_classes: int
    class_names: list[str]
    validation_success: bool
    report_path: str
    split_path: str = ""
    split_counts: dict[str, int] = field(default_factory=dict)
    violations: list[Violation] = field(default_factory=list)
    skipped: list[Violation] = field(default_factory=list)

    summary_keys: ClassVar[tuple[str, ...]] = ("dataset_fingerprint", "num_images", "num_classes", "validation_success")

    def summary(self) -> dict:
        """The part of the run summary (the CLI's ``--json``) the validate step adds."""
        return {key: getattr(self, key) for key in self.summary_keys}


def run_expectations(
    tables: dict[str, pd.DataFrame],
    rules: dict[str, tuple[str, str, dict]],
    parameters: dict,
    key_columns: dict[str, str],
    detail_columns: dict[str, str] | None = None,
    suite_prefix: str = "fpgaflow-intake",
) -> tuple[dict, list[Violation]]:
    """Validate each table with the rules that name it (``rule -> (table, expectation, kwargs)``).

    ``parameters`` fill the rules' ``$PARAMETER`` thresholds; a violation names the row by the table's
    ``key_columns`` entry and, for a rule in ``detail_columns``, explains itself with that column's value.
    """
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.data_context.types.base import ProgressBarsConfig

    for name in ("great_expectations", "great_expectations.data_context.types.base"):
        logging.getLogger(name).setLevel(logging.WARNING)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas("intake")
    report: dict[str, Any] = {"success": True, "results": []}
    violations: list[Violation] = []
    for table_name, table in tables.items():
        batch = source.add_dataframe_asset(table_name).add_batch_definition_whole_dataframe("all")
        suite = context.suites.add(gx.ExpectationSuite(name=f"{suite_prefix}-{table_name}"))
        for rule, (rule_table, expectation, kwargs) in rules.items():
            if rule_table == table_name:
                suite.add_expectation(getattr(gxe, expectation)(**kwargs, meta={"rule": rule}))
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{suite_prefix}-{table_name}", data=batch, suite=suite)
        )
        key_column = key_columns[table_name]
        result = definition.run(
            batch_parameters={"dataframe": table},
            expectation_parameters=parameters,
            result_format={"result_format": "COMPLETE", "unexpected_index_column_names": [key_column]},
        )
        report["success"] = report["success"] and result.success
        report["results"].append(result.to_json_dict())
        for outcome in result.results:
            if not outcome.success:
                violations.extend(_violations_of(outcome, key_column, table, detail_columns or {}))
    return report, violations


def _run_expectations(tables: dict[str, pd.DataFrame], settings: PipelineSettings) -> tuple[dict, list[Violation]]:
    return run_expectations(
        tables, RULES, suite_parameters(settings), {"files": "relpath", "classes": "label"}, {"decodes_as_image": "decode_error"}
    )


def _violations_of(outcome, key_column: str, table: pd.DataFrame, detail_columns: dict[str, str]) -> list[Violation]:
    config = outcome.expectation_config
    rule = config.meta["rule"]
    column = config.kwargs.get("column")
    indexed = outcome.result.get("unexpected_index_list") or []
    if not indexed:  # table-level rule (e.g. too few classes)
        observed = outcome.result.get("observed_value")
        return [Violation(rule, "(dataset)", f"observed {observed}, expected {_bounds(config.kwargs)}")]
    if rule in detail_columns:
        details = dict(zip(table[key_column], table[detail_columns[rule]]))
        return [Violation(rule, str(item[key_column]), str(details[item[key_column]])) for item in indexed]
    return [
        Violation(rule, str(item[key_column]), f"{column}={_plain(item.get(column))!r}, expected {_bounds(config.kwargs)}")
        for item in indexed
    ]


def _plain(value):
    return value.item() if hasattr(value, "item") else value


def _bounds(kwargs: dict) -> str:
    if "value_set" in kwargs:
        return f"one of {kwargs['value_set']}"
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    return " and ".join(
        part for part in (f">= {low}" if low is not None else "", f"<= {high}" if high is not None else "") if part
    )


def _exclude_unreadable(manifest: pd.DataFrame) -> tuple[pd.DataFrame, list[Violation]]:
    unreadable = manifest["decodes"].ne(True)
    skipped = [Violation("decodes_as_image", row.relpath, row.decode_error) for row in manifest[unreadable].itertuples()]
    for item in skipped:
        log.warning("skipping unreadable file %s: %s", item.file, item.detail)
    return manifest[~unreadable].reset_index(drop=True), skipped


def format_violations(violations: list[Violation]) -> str:
    return "\n".join(f"  - {item.file}: {item.rule} ({item.detail})" for item in violations)


def write_report(
    data_dir: Path, fingerprint: str, report: dict, violations: list[Violation], skipped: list[Violation], output_dir: Path
) -> dict[str, Any]:
    """Write the validation report (the skipped files included); the result fields every kind's intake shares."""
    report["skipped"] = [asdict(item) for item in skipped]
    report_path = write_text_atomic(output_dir / "validation.json", json.dumps(report, indent=1, default=str))
    return {
        "data_dir": str(data_dir),
        "dataset_fingerprint": fingerprint,
        "validation_success": bool(report["success"]),
        "report_path": str(report_path),
        "violations": violations,
        "skipped": skipped,
    }


def ensure_valid(result, report_path: Path) -> None:
    """Raise DataValidationError naming every broken rule of an intake ``result`` that failed validation."""
    if not result.validation_success:
        raise DataValidationError(
            f"data validation failed for {result.data_dir} ({len(result.violations)} problems; full report: {report_path}):\n"
            + format_violations(result.violations),
            report_path=report_path,
            violations=result.violations,
        )


def write_splits(result, splits: pd.DataFrame, output_dir: Path):
    """Write the split manifest beside the validation report and record it (path and counts) in ``result``."""
    result.split_path = str(write_text_atomic(output_dir / "splits.csv", splits.to_csv(index=False)))
    result.split_counts = {name: int((splits["split"] == name).sum()) for name in ("train", "val", "test")}
    return result


def intake_dataset(data_dir: Path, settings: PipelineSettings | None = None) -> IntakeResult:
    """Scan, validate and split ``data_dir``; raise DataValidationError when a rule is broken."""
    settings = settings or get_pipeline_settings()
    manifest = build_manifest(Path(data_dir))
    if manifest.empty:
        raise DataValidationError(f"{data_dir} holds no images: expected one sub-folder per class with image files")
    skipped: list[Violation] = []
    if settings.unreadable_policy == "skip":
        manifest, skipped = _exclude_unreadable(manifest)
    fingerprint = dataset_fingerprint(manifest)
    output_dir = settings.home / "datasets" / fingerprint[:16]
    report, violations = _run_expectations(validation_tables(manifest), settings)
    class_names = sorted(manifest["label"].unique().tolist())
    result = IntakeResult(
        **write_report(data_dir, fingerprint, report, violations, skipped, output_dir),
        num_images=len(manifest),
        num_classes=len(class_names),
        class_names=class_names,
    )
    ensure_valid(result, Path(result.report_path))
    splits = stratified_split(manifest, settings.validation_fraction, settings.test_fraction, settings.split_seed)
    return write_splits(result, splits, output_dir)


def load_splits(split_path: str | Path) -> pd.DataFrame:
    return pd.read_csv(split_path, dtype={"label": str})


def validation_rows(rules, result, violations: list[Violation]) -> list[dict]:
    """The ``data-validation`` table: each rule, whether it passed and its offending files; then the skipped files."""
    broken = {item.rule for item in violations}
    rows = [
        {
            "rule": rule,
            "passed": rule not in broken,
            "offending": ", ".join(item.file for item in violations if item.rule == rule)[:500],
        }
        for rule in rules
    ]
    if result is not None:
        rows += [{"rule": "skipped (unreadable)", "passed": True, "offending": item.file} for item in result.skipped]
    return rows
