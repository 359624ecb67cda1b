"""ImageNet weights the way Keras gets them: downloaded once into ``<home>/cache/weights``, verified.

A file is taken from the cache; else from the Keras cache (``imagenet_weights_dir``) once its hash
checks; else downloaded from the mirror (``weights_url``) or its published URL, retried with backoff
when the connection fails or is cut. Every file is written to a temporary file beside its place and
renamed into place only when complete and verified, so the cache never holds a half or wrong file.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from pydantic import BaseModel, ConfigDict

from fpgaflow.tasks.errors import PipelineStepError
from fpgaflow.tasks.featurizers.weights_download import HTTPRefused, Transfer, TransferFailed, backoff, download
from fpgaflow.tasks.featurizers.weights_manifest import Manifest, WeightsFile, load_manifest
from fpgaflow.tasks.settings import PipelineSettings, get_pipeline_settings

WAYS_OUT = (
    "Ways out: set FPGAFLOW_WEIGHTS_URL to a mirror serving {file}; or bring the file in by hand and run "
    "`fpgaflow weights import FILE`; or run with `--weights none` (seeded random initialisation)"
)


class WeightsUnavailable(PipelineStepError):
    """Weights that cannot be had or do not fit the featurizer; the message says how to provide them."""


class WeightsUnreachable(WeightsUnavailable):
    """The file could not be downloaded (no connection, timeout, connection cut, HTTP error)."""


class WeightsHashMismatch(WeightsUnavailable):
    """A file whose content is not the published one."""


class WeightsDiskFull(WeightsUnavailable):
    """The cache's disk could not hold the file."""


def cache_dir(settings: PipelineSettings) -> Path:
    return settings.home / "cache" / "weights"


def manifest_of(settings: PipelineSettings) -> Manifest:
    return load_manifest(settings.weights_manifest)


def source_url(entry: WeightsFile, settings: PipelineSettings) -> str:
    """Where ``entry`` is downloaded from: ``<weights_url>/<file>`` with a mirror set, else its published URL."""
    return f"{settings.weights_url.rstrip('/')}/{entry.file}" if settings.weights_url else entry.url


def file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def cached_file(entry: WeightsFile, settings: PipelineSettings) -> Path | None:
    """The verified file in the cache (only verified files are ever renamed into it), or None."""
    path = cache_dir(settings) / entry.file
    return path if path.is_file() else None


@dataclass(frozen=True)
class CacheStatus:
    entry: WeightsFile
    path: Path | None

    @property
    def size(self) -> int | None:
        return self.path.stat().st_size if self.path else self.entry.size


def cache_status(settings: PipelineSettings | None = None) -> list[CacheStatus]:
    """Every file of the manifest with its cached path (None when not cached)."""
    settings = settings or get_pipeline_settings()
    return [CacheStatus(entry, cached_file(entry, settings)) for entry in manifest_of(settings).files]


def _hash_mismatch(entry: WeightsFile, source: str, got: str) -> WeightsHashMismatch:
    return WeightsHashMismatch(
        f"{entry.file} from {source} is not the published file: expected {entry.algorithm} {entry.digest}, "
        f"got {got}; nothing was kept in the cache"
    )


@contextmanager
def _staging(entry: WeightsFile, settings: PipelineSettings) -> Iterator[Path]:
    """A temporary file beside the cache place of ``entry``; removed unless renamed into place; ENOSPC named."""
    directory = cache_dir(settings)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=f".{entry.file}.", suffix=".part", dir=directory)
        os.close(handle)
    except OSError as error:
        raise _write_failed(entry, directory, error) from None
    staged = Path(name)
    try:
        yield staged
    except OSError as error:
        raise _write_failed(entry, directory, error) from None
    finally:
        staged.unlink(missing_ok=True)


def _write_failed(entry: WeightsFile, directory: Path, error: OSError) -> WeightsUnavailable:
    if error.errno == errno.ENOSPC:
        needed = f" (the file takes {entry.size / 1e6:.1f} MB)" if entry.size else ""
        return WeightsDiskFull(
            f"no space left on the device of {directory} while writing {entry.file}{needed}: free space there or "
            f"point FPGAFLOW_HOME elsewhere; nothing was kept in the cache"
        )
    return WeightsUnavailable(f"cannot write {entry.file} into {directory}: {error}")


def _place(staged: Path, entry: WeightsFile, settings: PipelineSettings) -> Path:
    final = cache_dir(settings) / entry.file
    with open(staged, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(staged, final)
    return final


def _copy_verified(source: Path, entry: WeightsFile, settings: PipelineSettings) -> Path:
    """Copy ``source`` into the cache if its hash is the published one; WeightsHashMismatch otherwise."""
    with _staging(entry, settings) as staged:
        shutil.copyfile(source, staged)
        got = file_digest(staged, entry.algorithm)
        if got != entry.digest:
            raise _hash_mismatch(entry, str(source), got)
        return _place(staged, entry, settings)


def _download_verified(entry: WeightsFile, settings: PipelineSettings, timeout: float, retries: int, stream: TextIO) -> Path:
    url = source_url(entry, settings)
    attempts = retries + 1
    failure = ""
    for attempt in range(1, attempts + 1):
        with _staging(entry, settings) as staged:
            try:
                transfer: Transfer = download(url, staged, timeout, entry.file, stream)
            except HTTPRefused as refused:
                raise WeightsUnreachable(
                    f"cannot download {entry.file} from {url}: {refused}. " + WAYS_OUT.format(file=entry.file)
                ) from None
            except TransferFailed as failed:
                failure = str(failed)
                if attempt < attempts:
                    stream.write(f"  {entry.file}: {failure}; retry {attempt} of {retries}\n")
                    backoff(attempt, settings.weights_retry_backoff_seconds)
                continue
            got = transfer.digest(entry.algorithm)
            if got != entry.digest:
                raise _hash_mismatch(entry, url, got)
            stream.write(f"  {entry.file}: {transfer.size:,} bytes, {entry.algorithm} verified\n")
            return _place(staged, entry, settings)
    raise WeightsUnreachable(
        f"cannot download {entry.file} from {url} ({failure}; {attempts} attempt(s), timeout {timeout:g} s). "
        + WAYS_OUT.format(file=entry.file)
    )


def obtain(
    entry: WeightsFile,
    settings: PipelineSettings | None = None,
    timeout: float | None = None,
    retries: int | None = None,
    stream: TextIO | None = None,
) -> Path:
    """The verified local file of ``entry``: cached, taken from the Keras cache, or downloaded."""
    settings = settings or get_pipeline_settings()
    stream = stream or sys.stderr
    cached = cached_file(entry, settings)
    if cached is not None:
        return cached
    in_keras_cache = settings.imagenet_weights_dir.expanduser() / entry.file
    if in_keras_cache.is_file():
        try:
            path = _copy_verified(in_keras_cache, entry, settings)
            stream.write(f"  {entry.file}: taken from the Keras cache {in_keras_cache.parent}, {entry.algorithm} verified\n")
            return path
        except WeightsHashMismatch as mismatch:
            stream.write(f"  ignoring {in_keras_cache}: {mismatch}\n")
    return _download_verified(
        entry,
        settings,
        settings.weights_timeout_seconds if timeout is None else timeout,
        settings.weights_retries if retries is None else retries,
        stream,
    )


def import_file(path: Path, settings: PipelineSettings | None = None) -> tuple[WeightsFile, Path]:
    """Copy a file brought in by hand into the cache, after checking it is a manifest file with the right hash.

    The file is recognised by its name (a keras.applications file name) or, renamed, by its content."""
    settings = settings or get_pipeline_settings()
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsUnavailable(f"{path} is not a file")
    manifest = manifest_of(settings)
    named = next((entry for entry in manifest.files if entry.file == path.name), None)
    if named is None:
        digests = {algorithm: file_digest(path, algorithm) for algorithm in ("sha256", "md5")}
        named = next((entry for entry in manifest.files if digests[entry.algorithm] == entry.digest), None)
        if named is None:
            raise WeightsHashMismatch(
                f"{path} is none of the ImageNet files (neither by name nor by content): its sha256 is "
                f"{digests['sha256']}; `fpgaflow weights list` shows the files and their hashes"
            )
    return named, _copy_verified(path, named, settings)


class WeightsChoice(BaseModel):
    """What a run asked for and what it uses, and why (said in the output, an MLflow tag and the model card)."""

    model_config = ConfigDict(frozen=True)

    requested: str
    used: str
    note: str

    @property
    def fell_back(self) -> bool:
        return self.requested == "auto" and self.used == "none"


def choose_weights(
    requested: str,
    featurizer: str,
    settings: PipelineSettings | None = None,
    stream: TextIO | None = None,
    include_top: bool = False,
) -> WeightsChoice:
    """Obtain the ImageNet file a run needs, before anything else runs.

    'imagenet' must be had (else :class:`WeightsUnavailable`, naming the ways out); 'auto' tries within
    ``weights_auto_timeout_seconds`` and no retries, and otherwise falls back to 'none', saying why.
    ``include_top``: the featurizer's full ImageNet classifier file instead of its featurizer file."""
    settings = settings or get_pipeline_settings()
    keyword = str(requested).lower()
    if keyword not in ("imagenet", "auto"):
        note = "seeded random initialisation (weights none)" if keyword == "none" else f"weights file {requested}"
        return WeightsChoice(requested=requested, used=requested, note=note)
    manifest = manifest_of(settings)
    entry = manifest.classifier(featurizer) if include_top else manifest.for_featurizer(featurizer)
    if keyword == "imagenet":
        obtain(entry, settings, stream=stream)
        return WeightsChoice(requested=keyword, used="imagenet", note=f"ImageNet weights ({entry.file}, verified)")
    try:
        obtain(entry, settings, timeout=settings.weights_auto_timeout_seconds, retries=0, stream=stream)
    except WeightsUnavailable as error:
        return WeightsChoice(
            requested="auto",
            used="none",
            note=f"weights auto: ImageNet weights could not be had, so the featurizer starts from seeded random "
            f"initialisation ({error})",
        )
    return WeightsChoice(requested="auto", used="imagenet", note=f"weights auto: ImageNet weights ({entry.file}, verified)")


def imagenet_file(featurizer: str, settings: PipelineSettings | None = None) -> Path:
    """The verified ImageNet file of ``featurizer`` (obtained if needed)."""
    settings = settings or get_pipeline_settings()
    return obtain(manifest_of(settings).for_featurizer(featurizer), settings)
