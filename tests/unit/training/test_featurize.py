"""Featurizing in bounded batches through the one preprocessing, and the per-split feature cache."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from fpgaflow.fpga_runtime.preprocessing import PreprocessSpec, preprocess
from fpgaflow.tasks.errors import PipelineStepError
from fpgaflow.tasks.featurizers import features as features_module
from fpgaflow.tasks.featurizers.features import (
    FeatureExtractor,
    feature_cache_dir,
    featurize_splits,
    featurize_splits_with,
    image_batches,
    load_images,
)

SPEC = PreprocessSpec.for_input_size(32)


class MeanColour:
    """A real, cheap extractor: per-channel mean and std of the preprocessed image (6 features)."""

    def __init__(self, fingerprint: str = "mean-colour-v1"):
        self.fingerprint = fingerprint
        self.images_seen = 0
        self.largest_batch = 0

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.images_seen += len(batch)
        self.largest_batch = max(self.largest_batch, len(batch))
        return np.concatenate([batch.mean(axis=(1, 2)), batch.std(axis=(1, 2))], axis=1)


def test_extractor_protocol_is_structural():
    assert isinstance(MeanColour(), FeatureExtractor)


def test_features_follow_the_manifest_order_whatever_the_batch_size(digits):
    small = featurize_splits(digits.splits, digits.class_names, MeanColour(), SPEC, batch_size=7)
    large = featurize_splits(digits.splits, digits.class_names, MeanColour(), SPEC, batch_size=500)
    for split in ("train", "val", "test"):
        rows = digits.splits[digits.splits["split"] == split]
        np.testing.assert_allclose(small[split].features, large[split].features, rtol=1e-6)
        assert small[split].labels.tolist() == [digits.class_names.index(label) for label in rows["label"]]
        first = preprocess(Path(rows["path"].iloc[0]).read_bytes(), SPEC)
        np.testing.assert_array_equal(small[split].features[0, :3], first.mean(axis=(0, 1)))
    assert small.feature_dim == 6 and small.cache_paths == {} and not small.from_cache


def test_image_batches_are_lazy_and_bounded(digits, tmp_path):
    paths = list(digits.splits["path"][:10])
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    batches = image_batches([*paths, broken], SPEC, batch_size=4)
    shapes = [next(batches).shape, next(batches).shape]
    assert shapes == [(4, 32, 32, 3)] * 2  # the broken file, in the third batch, has not been read yet
    with pytest.raises(PipelineStepError, match=r"broken\.jpg"):
        next(batches)
    assert [len(batch) for batch in image_batches(paths, SPEC, batch_size=4)] == [4, 4, 2]


def test_extractors_only_ever_see_one_batch(digits):
    extractor = MeanColour()
    featurize_splits(digits.splits, digits.class_names, extractor, SPEC, batch_size=8)
    assert extractor.images_seen == len(digits.splits) and extractor.largest_batch == 8


def test_several_extractors_share_one_decoding_pass(digits, monkeypatch):
    decoded = []
    real = features_module.preprocess
    monkeypatch.setattr(features_module, "preprocess", lambda data, spec: decoded.append(1) or real(data, spec))
    extractors = {"a": MeanColour("a"), "b": MeanColour("b")}
    results = featurize_splits_with(digits.splits, digits.class_names, extractors, SPEC, batch_size=16)
    assert len(decoded) == len(digits.splits)
    assert extractors["a"].images_seen == extractors["b"].images_seen == len(digits.splits)
    np.testing.assert_array_equal(results["a"]["train"].features, results["b"]["train"].features)


def test_second_run_reads_the_cache(digits, tmp_path, capsys):
    first_extractor, second_extractor = MeanColour(), MeanColour()
    first = featurize_splits(digits.splits, digits.class_names, first_extractor, SPEC, 32, tmp_path)
    assert "featurize train" in capsys.readouterr().err  # the progress bar
    second = featurize_splits(digits.splits, digits.class_names, second_extractor, SPEC, 32, tmp_path)
    assert (first.from_cache, second.from_cache) == (False, True)
    assert first_extractor.images_seen == len(digits.splits) and second_extractor.images_seen == 0
    assert second.cache_paths == first.cache_paths and {path.parent for path in second.cache_paths.values()} == {tmp_path}
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(second[split].features, first[split].features)
        np.testing.assert_array_equal(second[split].labels, first[split].labels)


def test_only_the_extractors_not_cached_run(digits, tmp_path):
    featurize_splits(digits.splits, digits.class_names, MeanColour("cached"), SPEC, 32, tmp_path)
    cached, fresh = MeanColour("cached"), MeanColour("fresh")
    results = featurize_splits_with(digits.splits, digits.class_names, {"cached": cached, "fresh": fresh}, SPEC, 32, tmp_path)
    assert (cached.images_seen, fresh.images_seen) == (0, len(digits.splits))
    assert (results["cached"].from_cache, results["fresh"].from_cache) == (True, False)


@pytest.mark.parametrize("change", ["extractor", "spec"])
def test_cache_key_changes_with_graph_and_preprocessing(digits, tmp_path, change):
    featurize_splits(digits.splits, digits.class_names, MeanColour(), SPEC, 64, tmp_path)
    extractor, spec = MeanColour(), SPEC
    if change == "extractor":
        extractor = MeanColour("mean-colour-int8")
    else:
        spec = PreprocessSpec.for_input_size(32, channel_order="BGR")
    again = featurize_splits(digits.splits, digits.class_names, extractor, spec, 64, tmp_path)
    assert not again.from_cache and extractor.images_seen == len(digits.splits)


def test_an_image_moved_between_splits_refeaturizes_those_two_splits(digits, tmp_path):
    featurize_splits(digits.splits, digits.class_names, MeanColour(), SPEC, 64, tmp_path)
    moved = digits.splits.index[digits.splits["split"] == "train"][0]
    splits = digits.splits.assign(split=digits.splits["split"].where(digits.splits.index != moved, "val"))
    extractor = MeanColour()
    again = featurize_splits(splits, digits.class_names, extractor, SPEC, 64, tmp_path)
    assert extractor.images_seen == (splits["split"] != "test").sum() and not again.from_cache


def test_a_changed_image_invalidates_its_split_only(digits, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(Path(digits.splits["path"].iloc[0]).parents[1], data)
    splits = digits.splits.assign(path=[str(data / Path(path).parent.name / Path(path).name) for path in digits.splits["path"]])
    before = featurize_splits(splits, digits.class_names, MeanColour(), SPEC, 64, tmp_path / "cache")
    changed = Path(splits.loc[splits["split"] == "val", "path"].iloc[0])
    changed.write_bytes(Path(splits.loc[splits["split"] == "train", "path"].iloc[0]).read_bytes())
    extractor = MeanColour()
    after = featurize_splits(splits, digits.class_names, extractor, SPEC, 64, tmp_path / "cache")
    assert extractor.images_seen == (splits["split"] == "val").sum()
    np.testing.assert_array_equal(after["train"].features, before["train"].features)
    np.testing.assert_array_equal(after["val"].features[0], before["train"].features[0])
    assert after.cache_paths["val"] != before.cache_paths["val"] and after.cache_paths["test"] == before.cache_paths["test"]


def test_a_torn_cache_file_is_recomputed(digits, tmp_path):
    first = featurize_splits(digits.splits, digits.class_names, MeanColour(), SPEC, 64, tmp_path)
    first.cache_paths["test"].write_bytes(b"torn")
    extractor = MeanColour()
    again = featurize_splits(digits.splits, digits.class_names, extractor, SPEC, 64, tmp_path)
    assert extractor.images_seen == (digits.splits["split"] == "test").sum()
    np.testing.assert_array_equal(again["test"].features, first["test"].features)


def test_feature_cache_lives_under_home_and_can_be_turned_off(fpgaflow_home):
    from fpgaflow.tasks.settings import PipelineSettings

    assert feature_cache_dir() == fpgaflow_home.resolve() / "cache" / "features"
    assert feature_cache_dir(PipelineSettings(feature_cache=False)) is None


def test_manifest_problems_are_named(digits):
    with pytest.raises(PipelineStepError, match=r"lacks the columns \['split'\]"):
        featurize_splits(digits.splits.drop(columns="split"), digits.class_names, MeanColour(), SPEC)
    with pytest.raises(PipelineStepError, match=r"labels \['9'\] that are not among the class names"):
        featurize_splits(digits.splits, digits.class_names[:-1], MeanColour(), SPEC)
    with pytest.raises(PipelineStepError, match=r"splits \['holdout'\]"):
        featurize_splits(digits.splits.assign(split="holdout"), digits.class_names, MeanColour(), SPEC)


def test_extractor_with_a_wrong_output_shape_is_refused(digits):
    def flat(batch: np.ndarray) -> np.ndarray:
        return batch.reshape(-1)

    flat.fingerprint = "flat"
    with pytest.raises(PipelineStepError, match=r"returned shape \(\d+,\) for a batch of 32 images"):
        featurize_splits(digits.splits, digits.class_names, flat, SPEC, 32)


def test_undecodable_image_is_named(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    with pytest.raises(PipelineStepError, match=r"cannot use image .*broken\.jpg: not a decodable image"):
        load_images([broken], SPEC)
