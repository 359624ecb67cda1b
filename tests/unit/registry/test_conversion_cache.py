"""The tf2onnx conversion cache: the model training featurized through is copied, not converted again."""

from __future__ import annotations

import pytest

from fpgaflow.tasks.conversion import onnx_stages
from fpgaflow.tasks.conversion.cache import keras_model_fingerprint, onnx_cache_dir
from fpgaflow.tasks.conversion.onnx_stages import FEATURES, FPGA_INPUT, convert_keras_stage, convert_stages, load_keras_model
from fpgaflow.tasks.settings import PipelineSettings
from tests.fixtures.keras_stages import build_stages


def test_the_saved_and_loaded_model_share_the_fingerprint_of_the_one_in_memory(tmp_path):
    fpga, _ = build_stages(seed=4)
    fpga.save(tmp_path / "fpga.keras")
    assert keras_model_fingerprint(load_keras_model(tmp_path / "fpga.keras")) == keras_model_fingerprint(fpga)
    assert keras_model_fingerprint(build_stages(seed=5)[0]) != keras_model_fingerprint(fpga)


def test_a_model_converted_before_is_copied_from_the_cache(tmp_path, monkeypatch):
    fpga, _ = build_stages(seed=4)
    first = convert_keras_stage(fpga, tmp_path / "a" / "fpga.onnx", FPGA_INPUT, FEATURES, 17, tmp_path / "cache")

    def no_conversion(*_):
        raise AssertionError("converted again")

    monkeypatch.setattr(onnx_stages, "keras_to_onnx", no_conversion)
    second = convert_keras_stage(fpga, tmp_path / "b" / "fpga.onnx", FPGA_INPUT, FEATURES, 17, tmp_path / "cache")
    assert second.read_bytes() == first.read_bytes() and second != first
    assert second.stat().st_mode == first.stat().st_mode  # as readable as a converted file: services ship it
    with pytest.raises(AssertionError, match="converted again"):  # other weights, or another opset, convert anew
        convert_keras_stage(build_stages(seed=5)[0], tmp_path / "c.onnx", FPGA_INPUT, FEATURES, 17, tmp_path / "cache")
    with pytest.raises(AssertionError, match="converted again"):
        convert_keras_stage(fpga, tmp_path / "d.onnx", FPGA_INPUT, FEATURES, 16, tmp_path / "cache")
    with pytest.raises(AssertionError, match="converted again"):  # no cache directory: always converts
        convert_keras_stage(fpga, tmp_path / "e.onnx", FPGA_INPUT, FEATURES, 17)


def test_the_conversion_step_reuses_what_training_converted(stage_files, held_out_images, tmp_path, monkeypatch):
    settings = PipelineSettings(home=tmp_path / "home", build_cache_dir=tmp_path / "cache")  # not the session's
    fpga_path, cpu_path = stage_files
    trained = convert_keras_stage(
        load_keras_model(fpga_path), tmp_path / "train.onnx", FPGA_INPUT, FEATURES, settings.onnx_opset, onnx_cache_dir(settings)
    )
    converted = []
    real = onnx_stages.keras_to_onnx
    monkeypatch.setattr(onnx_stages, "keras_to_onnx", lambda model, *rest: converted.append(model.name) or real(model, *rest))
    report = convert_stages(fpga_path, cpu_path, held_out_images, tmp_path / "onnx", settings)
    assert report.passed and converted == ["cpu_stage"]
    assert report.fpga_onnx.read_bytes() == trained.read_bytes()


def test_the_cache_lives_under_home_or_a_shared_folder_and_can_be_turned_off(tmp_path, monkeypatch):
    monkeypatch.delenv("FPGAFLOW_BUILD_CACHE_DIR", raising=False)
    assert onnx_cache_dir(PipelineSettings(home=tmp_path)) == tmp_path / "cache" / "onnx"
    assert onnx_cache_dir(PipelineSettings(home=tmp_path, build_cache_dir=tmp_path / "team")) == tmp_path / "team" / "onnx"
    assert onnx_cache_dir(PipelineSettings(home=tmp_path, onnx_cache=False)) is None
