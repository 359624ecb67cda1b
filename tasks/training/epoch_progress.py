"""Training progress for Keras ``fit``: one line per epoch with loss and accuracy, or a bar on a terminal."""

from __future__ import annotations

import keras

from fpgaflow.tasks.progress import Progress

SHOWN = (("loss", "loss"), ("accuracy", "accuracy"), ("val_loss", "val loss"), ("val_accuracy", "val accuracy"))


def epoch_detail(logs: dict) -> str:
    """``loss 0.4123, accuracy 0.8750, val loss 0.5012, val accuracy 0.8333`` (what the epoch logged of those)."""
    return ", ".join(f"{label} {float(logs[key]):.4f}" for key, label in SHOWN if key in logs)


class EpochProgress(keras.callbacks.Callback):
    def __init__(self, description: str, epochs: int) -> None:
        super().__init__()
        self.description, self.epochs = description, epochs
        self.progress: Progress | None = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.progress = Progress(self.description, total=self.epochs, unit="epoch", interval=0)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.progress is not None:
            self.progress.update(1, epoch_detail(logs or {}))

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.progress is not None:
            self.progress.__exit__(None, None, None)
            self.progress = None
