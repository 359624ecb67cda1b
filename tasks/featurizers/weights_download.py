"""One HTTP download into a temporary file, hashed as it streams, with a progress display.

No retries and no cache here (:mod:`fpgaflow.tasks.featurizers.weights_store` does both): a transfer
either completes, with its digests, or raises :class:`TransferFailed` (the connection failed or was cut,
retrying may help), :class:`HTTPRefused` (the server answered with an error status, retrying will not
help) or :class:`OSError` (writing the file failed: disk full, permissions).
"""

from __future__ import annotations

import hashlib
import http.client
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from fpgaflow.tasks.progress import progress_shown

CHUNK_BYTES = 1 << 20
PLAIN_STEPS = 4  # lines a non-terminal gets per file: at 25, 50, 75 and 100 %


class TransferFailed(Exception):
    """The connection could not be made, timed out or was cut before the whole file arrived."""


class HTTPRefused(Exception):
    """The server answered with an HTTP error status."""


@dataclass(frozen=True)
class Transfer:
    size: int
    sha256: str
    md5: str

    def digest(self, algorithm: str) -> str:
        return self.sha256 if algorithm == "sha256" else self.md5


def _megabytes(count: int) -> str:
    return f"{count / 1e6:.1f} MB"


class Progress:
    """A bar redrawn in place on a terminal; a few plain lines otherwise; nothing with the progress setting off."""

    def __init__(self, label: str, total: int | None, stream: TextIO):
        self.label, self.total, self.stream = label, total, stream
        self.terminal = stream.isatty()
        self.shown = -1
        self.silent = not progress_shown()

    def start(self, url: str) -> None:
        if self.silent:
            return
        size = f" ({_megabytes(self.total)})" if self.total else ""
        self.stream.write(f"downloading {self.label} from {url}{size}\n")
        self.stream.flush()

    def update(self, received: int) -> None:
        if self.silent or not self.total:
            return
        percent = min(100, received * 100 // self.total)
        if self.terminal and percent != self.shown:
            filled = percent * 30 // 100
            bar = "#" * filled + "-" * (30 - filled)
            self.stream.write(f"\r  [{bar}] {percent:3d}% {_megabytes(received)} / {_megabytes(self.total)}")
            self.stream.flush()
        elif not self.terminal and percent // (100 // PLAIN_STEPS) > self.shown // (100 // PLAIN_STEPS):
            self.stream.write(f"  {self.label}: {percent}% ({_megabytes(received)} of {_megabytes(self.total)})\n")
            self.stream.flush()
        self.shown = percent

    def finish(self) -> None:
        if self.terminal and self.total and not self.silent:
            self.stream.write("\n")
            self.stream.flush()


def download(url: str, destination: Path, timeout: float, label: str, stream: TextIO) -> Transfer:
    """Stream ``url`` into ``destination`` (created or truncated); its size and digests once complete."""
    sha256, md5, received = hashlib.sha256(), hashlib.md5(), 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (the URL is the manifest's or the mirror's)
            declared = response.headers.get("Content-Length")
            expected = int(declared) if declared and declared.isdigit() else None
            progress = Progress(label, expected, stream)
            progress.start(url)
            with open(destination, "wb") as out:
                while chunk := response.read(CHUNK_BYTES):
                    out.write(chunk)
                    sha256.update(chunk)
                    md5.update(chunk)
                    received += len(chunk)
                    progress.update(received)
            progress.finish()
    except urllib.error.HTTPError as error:
        raise HTTPRefused(f"HTTP {error.code} {error.reason}") from None
    except urllib.error.URLError as error:
        raise TransferFailed(str(error.reason)) from None
    except (http.client.IncompleteRead, ConnectionError, TimeoutError) as error:
        raise TransferFailed(f"connection cut after {_megabytes(received)}: {type(error).__name__} {error}") from None
    except http.client.HTTPException as error:
        raise TransferFailed(f"{type(error).__name__} {error}") from None
    if expected is not None and received < expected:
        raise TransferFailed(f"connection cut after {received:,} of {expected:,} bytes")
    return Transfer(received, sha256.hexdigest(), md5.hexdigest())


def backoff(attempt: int, base_seconds: float) -> None:
    """Wait before retry ``attempt`` (1, 2, ...): base, 2 x base, 4 x base ..."""
    time.sleep(base_seconds * 2 ** (attempt - 1))
