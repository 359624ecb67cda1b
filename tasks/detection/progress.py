"""Saying what a long detector step is doing: a bar on the terminal, timed lines in the Prefect run log.

Outside a Prefect run lines go to stderr (stdout stays for a command's own output, such as ``--json``);
inside one they go to the run logger, which Prefect also echoes on the terminal.
"""

from __future__ import annotations

import sys
import time

from tqdm import tqdm

from fpgaflow.tasks.artifacts import in_prefect_run

# The longest a Prefect run log stays quiet while a bar moves.
LOG_INTERVAL_SECONDS = 5.0


def say(line: str) -> None:
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
    """A tqdm bar, and in a Prefect run a line at most every ``interval`` seconds and one at the end."""

    def __init__(self, description: str, total: int, unit: str, interval: float = LOG_INTERVAL_SECONDS) -> None:
        self.description, self.total, self.unit, self.interval = description, total, unit, interval
        self.done = 0
        self.started = self.logged = time.monotonic()
        self.logging = in_prefect_run()
        self.bar = tqdm(total=total, desc=description, unit=unit, disable=self.logging, file=sys.stderr)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.bar.close()
        if self.logging and exc_info[0] is None:
            say(self.line())

    def line(self) -> str:
        elapsed = time.monotonic() - self.started
        return f"{self.description}: {self.done}/{self.total} {self.unit}, {timing(elapsed, self.done, self.total)}"

    def update(self, count: int) -> None:
        self.done += count
        self.bar.update(count)
        now = time.monotonic()
        if self.logging and now - self.logged >= self.interval and self.done < self.total:
            self.logged = now
            say(self.line())
