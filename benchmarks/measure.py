"""Latency measurement after Triton's perf_analyzer.

``concurrency`` workers each send one request, wait for its answer and send the next. After a
warm-up, time is cut into windows; measuring stops once the last ``stable_windows`` windows agree
within ``tolerance`` on throughput and p50 latency (or after ``max_windows``). Percentiles and
throughput are then computed over those last windows together.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class WindowPlan:
    """How long to warm up and measure; ``window_seconds`` is one measurement window."""

    warmup_seconds: float = 3.0
    window_seconds: float = 5.0
    stable_windows: int = 3
    max_windows: int = 10
    tolerance: float = 0.10

    def __post_init__(self) -> None:
        if self.window_seconds <= 0 or self.warmup_seconds < 0:
            raise ValueError(
                f"window must be positive and warm-up not negative, got {self.window_seconds} and {self.warmup_seconds}"
            )
        if not 1 <= self.stable_windows <= self.max_windows:
            raise ValueError(f"need 1 <= stable_windows ({self.stable_windows}) <= max_windows ({self.max_windows})")


@dataclass(frozen=True)
class LevelResult:
    """One concurrency level of one configuration, over the windows that agreed."""

    concurrency: int
    requests: int
    throughput_per_second: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    windows: int
    stable: bool
    errors: int

    def to_dict(self) -> dict:
        return asdict(self)


def windows_agree(values: list[float], tolerance: float) -> bool:
    """Every value within ``tolerance`` (a fraction) of their mean."""
    if not values or any(value <= 0 for value in values):
        return False
    mean = sum(values) / len(values)
    return all(abs(value - mean) <= tolerance * mean for value in values)


class _Workers:
    """``concurrency`` threads calling ``request()`` back to back, recording (end time, seconds)."""

    def __init__(self, request: Callable[[], object], concurrency: int) -> None:
        self.request = request
        self.records: list[tuple[float, float]] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._loop, name=f"bench-worker-{index}", daemon=True) for index in range(concurrency)
        ]

    def __enter__(self) -> _Workers:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            start = time.perf_counter()
            try:
                self.request()
            except Exception as error:  # a failed request is counted and reported, never timed
                with self._lock:
                    self.errors.append(f"{type(error).__name__}: {error}")
                continue
            end = time.perf_counter()
            with self._lock:
                self.records.append((end, end - start))

    def since(self, start: float, end: float) -> list[float]:
        with self._lock:
            return [seconds for finished, seconds in self.records if start <= finished < end]


def measure_level(request: Callable[[], object], concurrency: int, plan: WindowPlan) -> LevelResult:
    """Run ``request`` from ``concurrency`` threads and measure it window by window."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    try:
        request()  # the first call pays for tracing, lazy initialisation and connecting, outside any window
    except Exception as error:
        raise RuntimeError(f"the first request at concurrency {concurrency} failed: {type(error).__name__}: {error}") from error
    windows: list[list[float]] = []
    with _Workers(request, concurrency) as workers:
        time.sleep(plan.warmup_seconds)
        boundary = time.perf_counter()
        while len(windows) < plan.max_windows:
            time.sleep(plan.window_seconds)
            now = time.perf_counter()
            windows.append(workers.since(boundary, now))
            boundary = now
            if len(windows) >= plan.stable_windows and _stable(windows[-plan.stable_windows :], plan):
                break
        errors = len(workers.errors)
        if errors and not any(windows):
            raise RuntimeError(f"every request failed at concurrency {concurrency}; the first: {workers.errors[0]}")
    last = windows[-plan.stable_windows :]
    latencies = np.array([seconds for window in last for seconds in window]) * 1000.0
    if latencies.size == 0:
        raise RuntimeError(f"no request finished within {plan.stable_windows} windows of {plan.window_seconds:g} s")
    return LevelResult(
        concurrency=concurrency,
        requests=int(latencies.size),
        throughput_per_second=latencies.size / (plan.window_seconds * len(last)),
        p50_ms=float(np.percentile(latencies, 50)),
        p90_ms=float(np.percentile(latencies, 90)),
        p99_ms=float(np.percentile(latencies, 99)),
        mean_ms=float(latencies.mean()),
        windows=len(windows),
        stable=_stable(last, plan),
        errors=errors,
    )


def _stable(windows: list[list[float]], plan: WindowPlan) -> bool:
    if any(not window for window in windows):
        return False
    counts = [float(len(window)) for window in windows]
    medians = [float(np.median(window)) for window in windows]
    return windows_agree(counts, plan.tolerance) and windows_agree(medians, plan.tolerance)


def measure_levels(
    request_factory: Callable[[], Callable[[], object]], levels: tuple[int, ...], plan: WindowPlan
) -> list[LevelResult]:
    """One :func:`measure_level` per concurrency level; ``request_factory()`` gives each level a fresh callable."""
    return [measure_level(request_factory(), level, plan) for level in levels]


def measure_interleaved(requests: dict[str, Callable[[], object]], rounds: int) -> dict[str, dict]:
    """Side by side at concurrency 1: each round sends one request of every configuration in turn (the order
    rotated each round), so load that drifts on a shared machine hits every configuration alike."""
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    names = list(requests)
    for name in names:
        requests[name]()
    timings: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            requests[name]()
            timings[name].append((time.perf_counter() - start) * 1000.0)
    return {
        name: {
            "rounds": rounds,
            "p50_ms": float(np.percentile(values, 50)),
            "p90_ms": float(np.percentile(values, 90)),
            "p99_ms": float(np.percentile(values, 99)),
        }
        for name, values in timings.items()
    }
