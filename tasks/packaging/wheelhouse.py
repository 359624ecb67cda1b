"""What the serving image installs: a wheel of fpgaflow and a wheelhouse of its runtime requirements.

The image installs with ``pip install --no-index --find-links``, so a build needs no package index
inside the engine. The wheelhouse is downloaded on the host for the *image's* Python and platform
(not the host's) and cached under ``Settings.home``, keyed by the requirement set and the target.
"""

from __future__ import annotations

import email.parser
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

from packaging.requirements import Requirement

from fpgaflow import fpga_runtime
from fpgaflow.tasks.errors import PipelineStepError
from fpgaflow.tasks.progress import say

PROJECT_NAME = "fpgaflow"
# Both default bases, python:3.11-slim and the debootstrapped bookworm image, ship glibc >= 2.36.
BASE_IMAGE_GLIBC_MINOR = 36
OLDEST_MANYLINUX_GLIBC_MINOR = 5
PROJECT_FILES = ("pyproject.toml", "README.md", "LICENSE")
# Fixed zip timestamps: the same sources give the same wheel bytes, so the engine's build cache
# of the install stage holds across builds.
REPRODUCIBLE_WHEEL_EPOCH = "315532800"


class WheelhouseError(PipelineStepError):
    """The fpgaflow wheel or the runtime wheelhouse could not be made."""


def project_root() -> Path:
    """The source tree fpgaflow runs from (the directory holding its pyproject.toml)."""
    root = Path(fpga_runtime.__file__).resolve().parent.parent
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and tomllib.loads(pyproject.read_text()).get("project", {}).get("name") == PROJECT_NAME:
        return root
    raise WheelhouseError(
        f"fpgaflow is not running from its source tree ({root} has no fpgaflow pyproject.toml); "
        "the serving image is built from the source tree: install fpgaflow with `pip install -e`"
    )


def _run_pip(arguments: list[str], what: str, environment: dict[str, str] | None = None) -> None:
    say(f"{what} ...")
    command = [sys.executable, "-m", "pip", *arguments, "--disable-pip-version-check", "--no-input"]
    completed = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **(environment or {})})
    if completed.returncode != 0:
        tail = "\n".join((completed.stdout + completed.stderr).strip().splitlines()[-15:])
        raise WheelhouseError(f"{what} failed (pip exit {completed.returncode}):\n{tail}")


def copy_project_sources(root: Path, source: Path) -> None:
    """The files a wheel is built from: the project files and every top-level package."""
    source.mkdir(parents=True)
    for name in PROJECT_FILES:
        if (root / name).is_file():
            shutil.copy2(root / name, source / name)
    for package in sorted(path for path in root.iterdir() if (path / "__init__.py").is_file()):
        shutil.copytree(package, source / package.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def _tree_digest(directory: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(path for path in directory.rglob("*") if path.is_file()):
        digest.update(str(path.relative_to(directory)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def build_project_wheel(cache_root: Path, root: Path | None = None) -> Path:
    """``pip wheel --no-deps`` of fpgaflow, cached under ``cache_root`` by the digest of its sources.

    Built from a copy of the sources (the work tree stays clean) with fixed timestamps: the same
    sources give the same wheel bytes.
    """
    root = root or project_root()
    cache_root = Path(cache_root)
    cache_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".build-", dir=cache_root) as scratch:
        source = Path(scratch) / "source"
        copy_project_sources(root, source)
        cached = cache_root / f"{PROJECT_NAME}-{_tree_digest(source)}"
        existing = sorted(cached.glob(f"{PROJECT_NAME}-*.whl"))
        if existing:
            return existing[0]
        built = Path(scratch) / "wheel"
        _run_pip(
            ["wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(built), str(source)],
            "building the fpgaflow wheel",
            environment={"SOURCE_DATE_EPOCH": REPRODUCIBLE_WHEEL_EPOCH},
        )
        (wheel,) = built.glob(f"{PROJECT_NAME}-*.whl")
        try:
            os.rename(built, cached)
        except OSError:
            if not any(cached.glob(f"{PROJECT_NAME}-*.whl")):
                raise
    return cached / wheel.name


def wheel_requirements(wheel: Path) -> list[str]:
    """The base-install requirements a wheel declares (``Requires-Dist`` without an extra), sorted."""
    with zipfile.ZipFile(wheel) as archive:
        metadata_name = next((name for name in archive.namelist() if name.endswith(".dist-info/METADATA")), None)
        if metadata_name is None:
            raise WheelhouseError(f"{wheel} has no .dist-info/METADATA: not a wheel")
        metadata = email.parser.Parser().parsestr(archive.read(metadata_name).decode())
    requirements = []
    for line in metadata.get_all("Requires-Dist") or []:
        requirement = Requirement(line)
        if requirement.marker is None or "extra" not in str(requirement.marker):
            requirements.append(str(requirement))
    return sorted(requirements)


def platform_tags(machine: str | None = None, glibc_minor: int = BASE_IMAGE_GLIBC_MINOR) -> list[str]:
    """Every manylinux tag a glibc-2.<glibc_minor> Linux on ``machine`` runs, newest first.

    pip's ``--platform`` takes tags literally (it does not widen ``manylinux_2_36`` to older
    glibc versions), so the wheelhouse download lists them all.
    """
    arch = (machine or platform.machine()).lower()
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(arch, arch)
    tags = [f"manylinux_2_{minor}_{arch}" for minor in range(glibc_minor, OLDEST_MANYLINUX_GLIBC_MINOR - 1, -1)]
    return tags + [f"manylinux2014_{arch}", f"manylinux2010_{arch}", f"manylinux1_{arch}"]


def wheelhouse_key(requirements: list[str], python_version: str, tags: list[str]) -> str:
    payload = json.dumps({"requirements": sorted(requirements), "python": python_version, "platforms": tags})
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def ensure_wheelhouse(requirements: list[str], python_version: str, cache_root: Path, tags: list[str] | None = None) -> Path:
    """A directory of wheels satisfying ``requirements`` on the image's Python; downloaded once per key.

    The download goes to a scratch directory renamed into place, so a half-finished download is
    never mistaken for a wheelhouse and concurrent builds do not step on each other.
    """
    if not requirements:
        raise WheelhouseError("empty requirement set: the fpgaflow wheel declares no runtime requirements")
    tags = tags or platform_tags()
    major, minor = python_version.split(".")
    cache_root = Path(cache_root)
    wheelhouse = cache_root / wheelhouse_key(requirements, python_version, tags)
    if (wheelhouse / "requirements.txt").is_file():
        return wheelhouse
    cache_root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".download-", dir=cache_root))
    try:
        platform_arguments = [argument for tag in tags for argument in ("--platform", tag)]
        _run_pip(
            [
                "download",
                "--only-binary=:all:",
                "--implementation",
                "cp",
                "--python-version",
                python_version,
                "--abi",
                f"cp{major}{minor}",
                *platform_arguments,
                "--dest",
                str(scratch),
                *requirements,
            ],
            f"downloading the runtime wheelhouse for Python {python_version}",
        )
        (scratch / "requirements.txt").write_text("\n".join(requirements) + "\n")
        try:
            os.rename(scratch, wheelhouse)
        except OSError:
            if not (wheelhouse / "requirements.txt").is_file():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return wheelhouse
