"""The dataset manifest: one row per file of a folder-per-class dataset, its fingerprint and split."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pandas as pd
from PIL import Image

MANIFEST_COLUMNS = (
    "path",
    "relpath",
    "label",
    "width",
    "height",
    "mode",
    "format",
    "bytes",
    "sha256",
    "decodes",
    "decode_error",
)
SPLITS = ("train", "val", "test")


def undecoded_row(data: bytes, properties: tuple[str, ...]) -> dict:
    """A file's size and hash with its image ``properties`` still None (and, when it is empty, why it does not decode).

    Properties stay None where the file is empty or undecodable, so each problem is reported once, by the rule
    that names it."""
    return {
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        **dict.fromkeys(properties),
        "decodes": None,
        "decode_error": "" if data else "empty file",
    }


def _describe_file(path: Path) -> dict:
    """Size, hash and image properties (see :func:`undecoded_row`)."""
    data = path.read_bytes()
    row = undecoded_row(data, ("width", "height", "mode", "format"))
    if not data:
        return row
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            row.update(width=image.width, height=image.height, mode=image.mode, format=image.format or "")
        row["decodes"] = True
    except Exception as error:  # every Pillow failure means the same thing here: not a usable image
        row.update(decodes=False, decode_error=f"{type(error).__name__}: {error}")
    return row


def build_manifest(data_dir: Path) -> pd.DataFrame:
    """Scan ``data_dir/<label>/<file>``; hidden files and files outside class folders are not data."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise NotADirectoryError(f"data folder {data_dir} does not exist or is not a folder")
    rows = []
    for class_dir in sorted(p for p in data_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in sorted(p for p in class_dir.rglob("*") if p.is_file() and not p.name.startswith(".")):
            rows.append(
                {
                    "path": str(path),
                    "relpath": path.relative_to(data_dir).as_posix(),
                    "label": class_dir.name,
                    **_describe_file(path),
                }
            )
    return pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))


def dataset_fingerprint(manifest: pd.DataFrame) -> str:
    """Content hash of the manifest: same files, labels and bytes give the same fingerprint."""
    digest = hashlib.sha256()
    for relpath, label, sha in sorted(zip(manifest["relpath"], manifest["label"], manifest["sha256"])):
        digest.update(f"{relpath}\t{label}\t{sha}\n".encode())
    return digest.hexdigest()


def stratified_split(manifest: pd.DataFrame, val_fraction: float, test_fraction: float, seed: int) -> pd.DataFrame:
    """Deterministic per-class split ordered by a seeded hash of each file's content and path.

    Independent of scan order, so a re-run on unchanged data gives the same split.
    """

    def order_key(row) -> str:
        return hashlib.sha256(f"{seed}:{row.sha256}:{row.relpath}".encode()).hexdigest()

    parts = []
    for label, group in manifest.groupby("label", sort=True):
        group = group.assign(_key=[order_key(row) for row in group.itertuples()]).sort_values("_key")
        count = len(group)
        n_test = max(1, round(count * test_fraction))
        n_val = max(1, round(count * val_fraction))
        if count - n_test - n_val < 1:
            raise ValueError(f"class {label!r} has {count} images: too few for a train/val/test split")
        split = ["test"] * n_test + ["val"] * n_val + ["train"] * (count - n_test - n_val)
        parts.append(group.assign(split=split).drop(columns="_key"))
    return pd.concat(parts).sort_values(["split", "label", "relpath"]).reset_index(drop=True)
