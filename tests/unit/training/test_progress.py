"""Training progress: a line per epoch (loss, accuracy, val loss, val accuracy), a bar on a terminal, `--quiet` silences it."""

from __future__ import annotations

import os

import numpy as np
import pytest

from fpgaflow.flows.cli import main
from fpgaflow.tasks import progress
from fpgaflow.tasks.config import TrainingConfig
from fpgaflow.tasks.settings import get_pipeline_settings
from fpgaflow.tasks.training.head import train_head
from tests.fixtures.settings import setting_setter

EPOCHS = 3


def train_tiny_head(description: str) -> None:
    generator = np.random.default_rng(0)
    features = generator.normal(size=(24, 8)).astype(np.float32)
    labels = np.arange(24) % 2
    config = TrainingConfig(hidden_units=0, epochs=EPOCHS, batch_size=8, early_stopping_patience=0)
    train_head(features[:16], labels[:16], features[16:], labels[16:], 2, config, progress=description)


@pytest.fixture
def progress_setting(monkeypatch):
    """Sets FPGAFLOW_PROGRESS for a test; the settings are read again before and after."""
    yield from setting_setter(monkeypatch, "FPGAFLOW_PROGRESS")


def test_each_epoch_is_one_plain_line_off_a_terminal(progress_setting, capsys):
    progress_setting("true")
    train_tiny_head("train head")
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(":")[0] for line in lines] == [f"train head {epoch}/{EPOCHS} epoch" for epoch in (1, 2, 3)]
    for line in lines:
        assert all(f"{name} " in line for name in ("loss", "accuracy", "val loss", "val accuracy")), line


def test_on_a_terminal_the_epochs_move_a_bar_instead(progress_setting, capsys, monkeypatch):
    progress_setting("true")
    monkeypatch.setattr(progress, "on_terminal", lambda: True)
    train_tiny_head("train head")
    err = capsys.readouterr().err
    assert f"{EPOCHS}/{EPOCHS}" in err and "epoch" in err and "val accuracy" in err
    assert "\r" in err and not any(line.startswith("train head 1/3 epoch:") for line in err.splitlines())


def test_the_progress_setting_off_silences_it(progress_setting, capsys):
    progress_setting("false")
    train_tiny_head("train head")
    with progress.Progress("featurize train", total=4, unit="img", interval=0) as bar:
        bar.update(4)
    progress.say("a line")
    assert capsys.readouterr().err == ""


def test_quiet_turns_the_progress_setting_off_before_the_command_runs(progress_setting, tmp_path, capsys):
    progress_setting("true")
    assert main(["run", str(tmp_path), "--quiet", "--tag", "fpgaflow.mine=1"]) == 2  # fails before any step
    assert os.environ["FPGAFLOW_PROGRESS"] == "false" and get_pipeline_settings().progress is False
    assert "keys starting with 'fpgaflow.' are fpgaflow's own" in capsys.readouterr().err
