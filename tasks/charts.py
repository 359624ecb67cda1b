"""Pictures of the pipeline's results: matplotlib figures drawn by the Agg canvas, never pyplot's global state
(steps run in threads, and a run must not leave figures behind)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

LATENCY_HISTOGRAM_FILE = "latency_histogram.png"


def new_figure(width: float, height: float) -> Figure:
    """A figure of ``width`` x ``height`` inches on its own Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    return figure


def save_png(figure: Figure, path: Path) -> Path:
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=100)
    return path


def plot_latency_histogram(latencies_ms: Sequence[float], title: str, path: Path) -> Path:
    """The histogram of request latencies (ms), with the median and the 90th percentile marked."""
    values = np.asarray(latencies_ms, np.float64)
    if values.size == 0:
        raise ValueError("a latency histogram needs at least one latency")
    figure = new_figure(6, 4)
    axes = figure.add_subplot()
    axes.hist(values, bins=min(30, max(5, values.size // 2)), color="tab:blue", alpha=0.8)
    for quantile, style in ((50, "-"), (90, "--")):
        value = float(np.percentile(values, quantile))
        axes.axvline(value, color="black", linestyle=style, label=f"p{quantile} {value:.1f} ms")
    axes.set_xlabel("latency per request (ms)")
    axes.set_ylabel("requests")
    axes.set_title(title)
    axes.legend()
    return save_png(figure, path)
