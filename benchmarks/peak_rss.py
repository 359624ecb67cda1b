"""Run a command and report its peak resident set size: ``python -m fpgaflow.benchmarks.peak_rss OUT -- COMMAND...``.

Writes the largest peak RSS (MB) among the command and the processes it waited for to the file OUT
and exits with the command's exit code: a process cannot measure another's peak after it ended, so
the bench runs the command under this one.
"""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m fpgaflow.benchmarks.peak_rss OUT -- COMMAND...", file=sys.stderr)
        return 2
    code = subprocess.run(argv[2:]).returncode
    Path(argv[0]).write_text(f"{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024:.1f}\n")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
