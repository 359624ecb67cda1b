"""The featurizers' Prefect tasks: build a featurizer, featurize the splits."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from fpgaflow.fpga_runtime.preprocessing import PreprocessSpec
from fpgaflow.tasks.featurizers.catalog import build_featurizer
from fpgaflow.tasks.featurizers.features import FeatureExtractor, FeatureSet, feature_cache_dir, featurize_splits
from fpgaflow.tasks.featurizers.weights_store import WeightsChoice, choose_weights

build_featurizer_task = task(name="build-featurizer", cache_policy=NO_CACHE, persist_result=False)(build_featurizer)


@task(name="choose-weights", cache_policy=NO_CACHE, persist_result=False)
def choose_weights_task(requested: str, featurizer: str, include_top: bool = False) -> WeightsChoice:
    return choose_weights(requested, featurizer, include_top=include_top)


@task(name="featurize", cache_policy=NO_CACHE, persist_result=False)
def featurize_splits_task(
    splits: pd.DataFrame,
    class_names: Sequence[str],
    extractor: FeatureExtractor,
    spec: PreprocessSpec,
    batch_size: int = 32,
) -> FeatureSet:
    return featurize_splits(splits, class_names, extractor, spec, batch_size, feature_cache_dir())
