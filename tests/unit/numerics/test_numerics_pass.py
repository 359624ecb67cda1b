"""The numerics step's loop: every format prepared first, each split decoded once for all of them, the fp32
features read back from the cache training filled, int8 calibration merged batch by batch."""

from __future__ import annotations

import numpy as np
import onnx

from fpgaflow.fpga_runtime.preprocessing import PreprocessSpec
from fpgaflow.tasks.config import PipelineConfig, TrainingConfig
from fpgaflow.tasks.conversion.onnx_stages import FEATURES, PROBABILITIES, convert_keras_stage
from fpgaflow.tasks.data.manifest import build_manifest, stratified_split
from fpgaflow.tasks.featurizers import features as features_module
from fpgaflow.tasks.featurizers.features import feature_cache_dir, featurize_splits
from fpgaflow.tasks.numerics.accuracy import evaluate_numerics
from fpgaflow.tasks.numerics.formats import OnnxFeatureExtractor, graph_fingerprint, numerics_for, prepare_model
from fpgaflow.tasks.numerics.int8 import ImageBatchReader, quantize_int8
from fpgaflow.tasks.settings import PipelineSettings
from fpgaflow.tasks.training.head import train_head

from .conftest import INPUT_SIZE, OPSET


def test_labelling_a_graph_with_its_format_keeps_its_fingerprint(featurizer_model, images):
    fp32 = prepare_model(numerics_for("fp32"), featurizer_model, images)
    assert fp32.metadata_props and not featurizer_model.metadata_props
    assert graph_fingerprint(fp32.SerializeToString()) == OnnxFeatureExtractor(featurizer_model).fingerprint
    msfp9 = prepare_model(numerics_for("msfp9"), featurizer_model, images)
    assert graph_fingerprint(msfp9.SerializeToString()) != graph_fingerprint(fp32.SerializeToString())


def test_calibration_reader_reads_one_stride_at_a_time(images):
    reader = ImageBatchReader("input", images[:10], batch_size=4)
    assert len(reader) == 3
    reader.set_range(start_index=1, end_index=2)
    assert reader.get_next()["input"].shape == (4, INPUT_SIZE, INPUT_SIZE, 3) and reader.get_next() is None
    reader.rewind()
    assert [len(batch["input"]) for batch in iter(reader.get_next, None)] == [4, 4, 2]


def test_calibrating_batch_by_batch_gives_the_ranges_of_all_images_at_once(featurizer_model, images):
    def ranges(model: onnx.ModelProto) -> dict[str, np.ndarray]:
        return {tensor.name: onnx.numpy_helper.to_array(tensor) for tensor in model.graph.initializer if "scale" in tensor.name}

    strided = ranges(quantize_int8(featurizer_model, images[:16], batch_size=2))
    whole = ranges(quantize_int8(featurizer_model, images[:16], batch_size=16))
    assert strided.keys() == whole.keys() and strided
    for name, value in whole.items():
        np.testing.assert_array_equal(strided[name], value, err_msg=name)


def test_each_split_is_decoded_once_for_every_format_and_fp32_comes_from_the_cache(
    featurizer_path, digits_dir, tmp_path, monkeypatch
):
    splits = stratified_split(build_manifest(digits_dir), val_fraction=0.15, test_fraction=0.15, seed=0)
    class_names = sorted(splits["label"].unique())
    spec = PreprocessSpec.for_input_size(INPUT_SIZE)
    settings = PipelineSettings(home=tmp_path / "home", int8_calibration_images=8)
    config = PipelineConfig(
        data_dir=digits_dir, input_size=INPUT_SIZE, numerics=("fp32", "int8", "msfp9"), training=TrainingConfig(epochs=3)
    )
    trained = featurize_splits(
        splits, class_names, OnnxFeatureExtractor(featurizer_path), spec, cache_dir=feature_cache_dir(settings), progress=False
    )
    head = train_head(
        trained["train"].features,
        trained["train"].labels,
        trained["val"].features,
        trained["val"].labels,
        len(class_names),
        config.training,
    )
    cpu_onnx = convert_keras_stage(head.model, tmp_path / "cpu_stage.onnx", FEATURES, PROBABILITIES, OPSET)

    decoded: list[int] = []
    real = features_module.preprocess
    monkeypatch.setattr(features_module, "preprocess", lambda data, spec: decoded.append(1) or real(data, spec))
    outcome = evaluate_numerics(
        featurizer_path, cpu_onnx, splits, class_names, "unused", spec, config, tmp_path / "numerics", settings, progress=False
    )
    assert set(outcome.results) == {"fp32", "int8", "msfp9"} and outcome.results["fp32"].passed
    latency_image = 1
    assert len(decoded) == len(splits) + settings.int8_calibration_images + latency_image  # one pass for all formats
    cached = sorted(feature_cache_dir(settings).glob("*.npy"))
    assert len(cached) == 3 * 3 and set(trained.cache_paths.values()) <= set(cached)  # fp32 added no file of its own
    assert outcome.files["fp32"].cpu_onnx == cpu_onnx
    for name in ("int8", "msfp9"):
        assert outcome.files[name].fpga_onnx.is_file() and outcome.files[name].cpu_onnx.is_file()
