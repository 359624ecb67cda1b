"""The sample digits as the intake hands them over: split manifest, class names, dataset fingerprint."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pytest

from fpgaflow.tasks.data.manifest import build_manifest, dataset_fingerprint, stratified_split


@dataclass(frozen=True)
class Digits:
    splits: pd.DataFrame
    class_names: list[str]
    fingerprint: str


@pytest.fixture(scope="session")
def digits(digits_dir) -> Digits:
    """300 digit JPEGs (32 px, 30 per class) split 22/4/4 per class."""
    manifest = build_manifest(digits_dir)
    splits = stratified_split(manifest, val_fraction=0.15, test_fraction=0.15, seed=0)
    return Digits(splits, sorted(splits["label"].unique()), dataset_fingerprint(manifest))
