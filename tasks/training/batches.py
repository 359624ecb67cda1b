"""Batches of images read from files as they are served, for training either kind of model."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np

from fpgaflow.fpga_runtime.preprocessing import PreprocessSpec
from fpgaflow.tasks.featurizers.features import load_images


class ImageBatches(keras.utils.PyDataset):
    """(preprocessed images, targets) batches read from files, reshuffled each epoch with a seeded order.

    The targets are label indices for a classifier, encoded priors for a detector.
    """

    def __init__(
        self, paths: Sequence[str], targets: np.ndarray, spec: PreprocessSpec, batch_size: int, shuffle: bool, seed: int
    ):
        super().__init__()
        self.paths, self.targets, self.spec, self.batch_size = list(paths), np.asarray(targets), spec, batch_size
        self.shuffle, self.rng = shuffle, np.random.default_rng(seed)
        self.order = self.rng.permutation(len(self.paths)) if shuffle else np.arange(len(self.paths))

    def __len__(self) -> int:
        return -(-len(self.paths) // self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        chosen = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        return load_images([self.paths[position] for position in chosen], self.spec), self.targets[chosen]

    def on_epoch_end(self) -> None:
        if self.shuffle:
            self.order = self.rng.permutation(len(self.paths))
