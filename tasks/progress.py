"""Saying what a long step is doing — featurization, training epochs, numerics, detection maps: one helper for all.

On a terminal (stderr is a TTY, outside a Prefect run) a bar; otherwise plain lines: in a Prefect run through
the run logger (which Prefect echoes on the terminal), else on stderr, so stdout stays for a command's own
output such as ``--json``. The ``progress`` setting off (``FPGAFLOW_PROGRESS=false``, ``--quiet``) silences all of it.
"""

from __future__ import annotations

import sys
import time

from tqdm import tqdm

from fpgaflow.tasks.settings import get_pipeline_settings

# The longest the plain lines stay quiet while a long step moves.
LOG_INTERVAL_SECONDS = 5.0


def in_prefect_run() -> bool:
    """True inside a Prefect flow or task run; Prefect is not imported for the answer where nothing imported it yet."""
    if "prefect" not in sys.modules:
        return False
    from fpgaflow.tasks.artifacts import in_prefect_run as inside

    return inside()


def progress_shown() -> bool:
    return get_pipeline_settings().progress


def on_terminal() -> bool:
    """True where a bar redrawn in place reads well: stderr is a terminal and no Prefect run collects the lines."""
    return sys.stderr.isatty() and not in_prefect_run()


def say(line: str) -> None:
    """One plain progress line (nothing when progress is silenced)."""
    if not progress_shown():
        return
    if in_prefect_run():
        from prefect import get_run_logger

        get_run_logger().info(line)
    else:
        print(line, file=sys.stderr, flush=True)


def duration(seconds: float) -> str:
    """``75.4`` → ``'1m15s'``; under a minute ``'42s'``."""
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes}m{rest:02d}s" if minutes else f"{rest}s"


def remaining(elapsed: float, done: float, total: float) -> float | None:
    """Seconds left if the rest goes at the pace so far; None before anything is done."""
    return elapsed / done * (total - done) if done > 0 else None


def timing(elapsed: float, done: float, total: float) -> str:
    left = remaining(elapsed, done, total)
    return f"elapsed {duration(elapsed)}" + (f", about {duration(left)} left" if left is not None else "")


class Progress:
    """A bar on a terminal; otherwise a line at most every ``interval`` seconds (every update with 0) and one at the end.

    ``update(count, detail)`` shows ``detail`` (an epoch's loss and accuracy, say) beside the bar or in the line.
    """

    def __init__(
        self, description: str, total: int, unit: str, interval: float = LOG_INTERVAL_SECONDS, shown: bool = True
    ) -> None:
        self.description, self.total, self.unit, self.interval = description, total, unit, interval
        self.done, self.detail = 0, ""
        self.started = self.logged = time.monotonic()
        shown = shown and progress_shown()
        self.bar_shown = shown and on_terminal()
        self.lines_shown = shown and not self.bar_shown
        self.said_at = -1  # ``done`` when the last line was said
        self.bar = tqdm(total=total, desc=description, unit=unit, disable=not self.bar_shown, file=sys.stderr)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.bar.close()
        if self.lines_shown and exc_info[0] is None and self.said_at != self.done:
            say(self.line())

    def line(self) -> str:
        elapsed = time.monotonic() - self.started
        detail = f": {self.detail}" if self.detail else ""
        return f"{self.description} {self.done}/{self.total} {self.unit}{detail}, {timing(elapsed, self.done, self.total)}"

    def update(self, count: int, detail: str = "") -> None:
        self.done += count
        self.detail = detail or self.detail
        self.bar.update(count)
        if detail:
            self.bar.set_postfix_str(detail, refresh=False)
        now = time.monotonic()
        if self.lines_shown and now - self.logged >= self.interval and (self.done < self.total or self.interval == 0):
            self.logged, self.said_at = now, self.done
            say(self.line())
