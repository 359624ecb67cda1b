"""One line per training epoch: loss, validation loss and mAP@0.5, elapsed time and an estimate of what remains.

Within an epoch that runs longer than a few seconds, a line per :data:`~fpgaflow.tasks.progress.LOG_INTERVAL_SECONDS`
says which batch it is on. The validation mAP is written into the epoch's logs as ``val_map50``, so
the fit history holds it and callbacks placed after this one can watch it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import keras

from fpgaflow.tasks.progress import LOG_INTERVAL_SECONDS, duration, say

VAL_MAP = "val_map50"


class EpochReport(keras.callbacks.Callback):
    def __init__(self, epochs: int, batches: int, validation_map: Callable[[], float], interval: float = LOG_INTERVAL_SECONDS):
        super().__init__()
        self.epochs, self.batches, self.validation_map, self.interval = epochs, batches, validation_map, interval
        self.started = self.epoch_started = self.logged = time.monotonic()

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.started = time.monotonic()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch_started = self.logged = time.monotonic()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        now = time.monotonic()
        if now - self.logged >= self.interval and batch + 1 < self.batches:
            self.logged = now
            say(f"  batch {batch + 1}/{self.batches} of this epoch, {duration(now - self.epoch_started)} into it")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs if logs is not None else {}
        logs[VAL_MAP] = float(self.validation_map())
        elapsed = time.monotonic() - self.started
        done, left = epoch + 1, self.epochs - epoch - 1
        estimate = f", at most about {duration(elapsed / done * left)} left ({left} epochs)" if left else ""
        say(
            f"epoch {done}/{self.epochs}: loss {logs.get('loss', float('nan')):.4f}, "
            f"val_loss {logs.get('val_loss', float('nan')):.4f}, val mAP@0.5 {logs[VAL_MAP]:.4f}, "
            f"elapsed {duration(elapsed)}{estimate}"
        )
