"""The split is deterministic, stratified, and the fingerprint follows content only."""

from __future__ import annotations

import shutil

import pandas as pd

from fpgaflow.tasks.data.intake import intake_dataset
from fpgaflow.tasks.data.manifest import build_manifest, dataset_fingerprint, stratified_split
from fpgaflow.tasks.settings import PipelineSettings


def test_rerun_gives_same_split_and_fingerprint(digits_dir, tmp_path):
    first = intake_dataset(digits_dir, PipelineSettings())
    first_split = pd.read_csv(first.split_path)
    second = intake_dataset(digits_dir, PipelineSettings(home=tmp_path / "other-home"))
    assert second.dataset_fingerprint == first.dataset_fingerprint
    pd.testing.assert_frame_equal(pd.read_csv(second.split_path), first_split)


def test_split_is_stratified_and_disjoint(digits_dir):
    splits = stratified_split(build_manifest(digits_dir), 0.15, 0.15, seed=0)
    counts = splits.groupby(["label", "split"]).size().unstack()
    assert (counts["test"] == 4).all() and (counts["val"] == 4).all() and (counts["train"] == 22).all()
    assert splits["relpath"].is_unique


def test_seed_changes_the_split_but_not_the_fingerprint(digits_dir):
    manifest = build_manifest(digits_dir)
    split_a = stratified_split(manifest, 0.15, 0.15, seed=0).set_index("relpath")["split"]
    split_b = stratified_split(manifest, 0.15, 0.15, seed=1).set_index("relpath")["split"]
    assert (split_a != split_b.loc[split_a.index]).any()


def test_fingerprint_changes_with_content_and_labels(digits_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(digits_dir, copy)
    original = dataset_fingerprint(build_manifest(copy))
    assert dataset_fingerprint(build_manifest(copy)) == original
    victim = sorted((copy / "0").iterdir())[0]
    shutil.move(victim, copy / "1" / victim.name)
    assert dataset_fingerprint(build_manifest(copy)) != original
