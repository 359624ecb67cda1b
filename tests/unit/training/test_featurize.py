"""Batched featurizing through the one preprocessing, and the on-disk feature cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fpgaflow.fpga_runtime.preprocessing import PreprocessSpec, preprocess
from fpgaflow.tasks.errors import PipelineStepError
from fpgaflow.tasks.featurizers.features import FeatureExtractor, feature_cache_dir, featurize_splits, load_images

SPEC = PreprocessSpec.for_input_size(32)


class MeanColour:
    """A real, cheap extractor: per-channel mean and std of the preprocessed image (6 features)."""

    def __init__(self, fingerprint: str = "mean-colour-v1"):
        self.fingerprint = fingerprint
        self.images_seen = 0

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.images_seen += len(batch)
        return np.concatenate([batch.mean(axis=(1, 2)), batch.std(axis=(1, 2))], axis=1)


def test_extractor_protocol_is_structural():
    assert isinstance(MeanColour(), FeatureExtractor)


def test_features_follow_the_manifest_order_whatever_the_batch_size(digits):
    small = featurize_splits(digits.splits, digits.class_names, digits.fingerprint, MeanColour(), SPEC, batch_size=7)
    large = featurize_splits(digits.splits, digits.class_names, digits.fingerprint, MeanColour(), SPEC, batch_size=500)
    for split in ("train", "val", "test"):
        rows = digits.splits[digits.splits["split"] == split]
        np.testing.assert_allclose(small[split].features, large[split].features, rtol=1e-6)
        assert small[split].labels.tolist() == [digits.class_names.index(label) for label in rows["label"]]
        first = preprocess(Path(rows["path"].iloc[0]).read_bytes(), SPEC)
        np.testing.assert_array_equal(small[split].features[0, :3], first.mean(axis=(0, 1)))
    assert small.feature_dim == 6 and small.cache_path is None and not small.from_cache


def test_second_run_reads_the_cache(digits, tmp_path, capsys):
    first_extractor, second_extractor = MeanColour(), MeanColour()
    first = featurize_splits(digits.splits, digits.class_names, digits.fingerprint, first_extractor, SPEC, 32, tmp_path)
    assert "featurize train" in capsys.readouterr().err  # the progress bar
    second = featurize_splits(digits.splits, digits.class_names, digits.fingerprint, second_extractor, SPEC, 32, tmp_path)
    assert (first.from_cache, second.from_cache) == (False, True)
    assert first_extractor.images_seen == len(digits.splits) and second_extractor.images_seen == 0
    assert second.cache_path == first.cache_path and second.cache_path.parent == tmp_path
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(second[split].features, first[split].features)
        np.testing.assert_array_equal(second[split].labels, first[split].labels)


@pytest.mark.parametrize("change", ["extractor", "dataset", "spec", "split"])
def test_cache_key_changes_with_weights_data_preprocessing_and_split(digits, tmp_path, change):
    featurize_splits(digits.splits, digits.class_names, digits.fingerprint, MeanColour(), SPEC, 64, tmp_path)
    extractor, fingerprint, spec, splits = MeanColour(), digits.fingerprint, SPEC, digits.splits
    if change == "extractor":
        extractor = MeanColour("mean-colour-int8")
    elif change == "dataset":
        fingerprint = "0" * 64
    elif change == "spec":
        spec = PreprocessSpec.for_input_size(32, channel_order="BGR")
    else:
        splits = splits.assign(split=splits["split"].replace({"val": "test", "test": "val"}))
    again = featurize_splits(splits, digits.class_names, fingerprint, extractor, spec, 64, tmp_path)
    assert not again.from_cache and extractor.images_seen == len(splits)


def test_feature_cache_lives_under_home_and_can_be_turned_off(fpgaflow_home):
    from fpgaflow.tasks.settings import PipelineSettings

    assert feature_cache_dir() == fpgaflow_home.resolve() / "cache" / "features"
    assert feature_cache_dir(PipelineSettings(feature_cache=False)) is None


def test_manifest_problems_are_named(digits):
    with pytest.raises(PipelineStepError, match=r"lacks the columns \['split'\]"):
        featurize_splits(digits.splits.drop(columns="split"), digits.class_names, "f", MeanColour(), SPEC)
    with pytest.raises(PipelineStepError, match=r"labels \['9'\] that are not among the class names"):
        featurize_splits(digits.splits, digits.class_names[:-1], "f", MeanColour(), SPEC)
    with pytest.raises(PipelineStepError, match=r"splits \['holdout'\]"):
        featurize_splits(digits.splits.assign(split="holdout"), digits.class_names, "f", MeanColour(), SPEC)


def test_extractor_with_a_wrong_output_shape_is_refused(digits):
    def flat(batch: np.ndarray) -> np.ndarray:
        return batch.reshape(-1)

    flat.fingerprint = "flat"
    with pytest.raises(PipelineStepError, match=r"returned shape \(\d+,\) for a batch of 32 images"):
        featurize_splits(digits.splits, digits.class_names, "f", flat, SPEC, 32)


def test_undecodable_image_is_named(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    with pytest.raises(PipelineStepError, match=r"cannot use image .*broken\.jpg: not a decodable image"):
        load_images([broken], SPEC)
