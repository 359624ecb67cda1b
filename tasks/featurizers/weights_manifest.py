"""The ImageNet files fpgaflow uses, as keras.applications publishes them: name, file, URL and hash.

URLs and hashes are keras.applications' own (``resnet.py`` ``WEIGHTS_HASHES``, ``densenet.py`` and
``vgg16.py`` ``file_hash``, ``imagenet_utils.py`` ``CLASS_INDEX_PATH``). Keras publishes an MD5 for each
of these files and no SHA-256, so the built-in entries are verified by that published MD5; a manifest
given in the ``weights_manifest`` setting may give ``sha256`` instead (and then it is what is checked).
The sizes are those Keras prints while downloading, where known.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fpgaflow.tasks.errors import PipelineStepError

KERAS_APPLICATIONS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"
CLASS_INDEX = "imagenet_class_index"

# The ImageNet file each featurizer loads: the convolutional base ("notop") for the pooled featurizers and the
# detector's VGG-16 backbone; the vgg16 featurizer's fc7 needs fc6 and fc7 (Keras' "top" file).
FEATURIZER_FILES = {
    "resnet50": "resnet50_notop",
    "resnet152": "resnet152_notop",
    "densenet121": "densenet121_notop",
    "vgg16": "vgg16_top",
    "ssd_vgg": "vgg16_notop",
}


class ManifestError(PipelineStepError):
    """A weights manifest that cannot be read, or a name it does not hold."""


class WeightsFile(BaseModel):
    """One published file: where it comes from and what it must hash to."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="Short name: '<featurizer>_top', '<featurizer>_notop' or 'imagenet_class_index'.")
    file: str = Field(description="File name, as keras.applications caches it and as a mirror serves it.")
    url: str = Field(description="Published URL.")
    sha256: str | None = None
    md5: str | None = Field(default=None, description="Used only when no sha256 is known (what Keras publishes).")
    size: int | None = Field(default=None, ge=0, description="Bytes, where published.")

    @model_validator(mode="after")
    def _has_a_hash(self) -> WeightsFile:
        if not (self.sha256 or self.md5):
            raise ValueError(f"{self.name}: a file needs a sha256 (or the md5 Keras publishes)")
        return self

    @property
    def algorithm(self) -> str:
        return "sha256" if self.sha256 else "md5"

    @property
    def digest(self) -> str:
        return (self.sha256 or self.md5 or "").lower()


class Manifest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    files: tuple[WeightsFile, ...]

    @cached_property
    def by_name(self) -> dict[str, WeightsFile]:
        return {entry.name: entry for entry in self.files}

    def get(self, name: str) -> WeightsFile:
        """The entry called ``name``, or whose file is called ``name``."""
        found = self.by_name.get(name) or next((entry for entry in self.files if entry.file == name), None)
        if found is None:
            raise ManifestError(f"no ImageNet file is called {name!r}; known: {', '.join(self.by_name)}")
        return found

    def for_featurizer(self, featurizer: str) -> WeightsFile:
        """The ImageNet file featurizer ``featurizer`` loads its weights from."""
        if featurizer not in FEATURIZER_FILES:
            raise ManifestError(f"featurizer {featurizer!r} has no ImageNet file; known: {', '.join(FEATURIZER_FILES)}")
        return self.get(FEATURIZER_FILES[featurizer])

    def classifier(self, featurizer: str) -> WeightsFile:
        """The full ImageNet classifier of ``featurizer`` (its Keras top included)."""
        return self.get(f"{featurizer}_top")

    def select(self, names: list[str]) -> list[WeightsFile]:
        """Entries by name, file name or featurizer name (a featurizer means its top and notop files); 'all'."""
        chosen: dict[str, WeightsFile] = {}
        for name in names:
            if name == "all":
                found = list(self.files)
            elif name in FEATURIZER_FILES and name not in self.by_name:
                found = [entry for entry in self.files if entry.name.rsplit("_", 1)[0] == name]
                found = found or [self.for_featurizer(name)]
            else:
                found = [self.get(name)]
            chosen.update((entry.name, entry) for entry in found)
        return list(chosen.values())


def _keras_file(name: str, folder: str, md5: str, size: int | None = None) -> WeightsFile:
    suffix = "_notop" if name.endswith("_notop") else ""
    file = f"{name.rsplit('_', 1)[0]}_weights_tf_dim_ordering_tf_kernels{suffix}.h5"
    return WeightsFile(name=name, file=file, url=f"{KERAS_APPLICATIONS_URL}{folder}/{file}", md5=md5, size=size)


KERAS_MANIFEST = Manifest(
    files=(
        _keras_file("resnet50_top", "resnet", "2cb95161c43110f7111970584f804107"),
        _keras_file("resnet50_notop", "resnet", "4d473c1dd8becc155b73f8504c6f6626", 94765736),
        _keras_file("resnet152_top", "resnet", "100835be76be38e30d865e96f2aaae62"),
        _keras_file("resnet152_notop", "resnet", "ee4c566cf9a93f14d82f913c2dc6dd0c"),
        _keras_file("densenet121_top", "densenet", "9d60b8095a5708f2dcce2bca79d332c7"),
        _keras_file("densenet121_notop", "densenet", "30ee3e1110167f948a6b9946edeeb738"),
        _keras_file("vgg16_top", "vgg16", "64373286793e3c8b2b4e3219cbf3544b"),
        _keras_file("vgg16_notop", "vgg16", "6d6bbae143d832006294945121d1f1fc", 58889256),
        WeightsFile(
            name=CLASS_INDEX,
            file="imagenet_class_index.json",
            url="https://storage.googleapis.com/download.tensorflow.org/data/imagenet_class_index.json",
            md5="c2c37ea517e94d9795004a39431a14cb",
        ),
    )
)


def load_manifest(path: Path | None) -> Manifest:
    """The manifest in the JSON file ``path`` ({"files": [...]}), or the built-in Keras one."""
    if path is None:
        return KERAS_MANIFEST
    try:
        return Manifest.model_validate(json.loads(Path(path).expanduser().read_text()))
    except (OSError, ValueError, ValidationError) as error:
        raise ManifestError(f"cannot read the weights manifest {path}: {error}") from None
