"""Splitting an FPGA stage across devices: cut where the graph narrows to one tensor, fewest parts, same answers."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
import pytest

from fpgaflow.fpga_runtime.errors import InvalidServiceDefinition, ResourceExhausted
from fpgaflow.fpga_runtime.placement.cost import cost_report
from fpgaflow.fpga_runtime.placement.segments import segments
from fpgaflow.fpga_runtime.placement.split import cut_candidates, node_weight_bytes, plan_split
from fpgaflow.fpga_runtime.profiles import load_profile
from fpgaflow.fpga_runtime.service import load_service
from fpgaflow.tasks.deployment.split import SOURCE_SPLIT_FROM, fit_to_device, split_service
from fpgaflow.tasks.settings import PipelineSettings
from tests.fixtures.split_service import (
    SMALL_DEVICE_BYTES,
    WIDE_DEVICE_BYTES,
    small_device_profile,
    write_residual_service,
    write_wide_service,
)

CONV_A, CONV_BC = 896, 2336  # fp32 weight bytes of the fixture's convolutions


@pytest.fixture(scope="module")
def service_dir(tmp_path_factory):
    return write_residual_service(tmp_path_factory.mktemp("residual") / "deep")


@pytest.fixture(scope="module")
def featurizer(service_dir):
    return onnx.load(service_dir / "featurizer.onnx")


@pytest.fixture(scope="module")
def profile(tmp_path_factory):
    return small_device_profile(tmp_path_factory.mktemp("profiles"))


def test_cuts_only_where_one_float_tensor_is_alive_never_inside_the_residual_block(featurizer):
    cuts = [name for _, name in cut_candidates(featurizer)]
    assert "stem" in cuts and "block" in cuts
    assert "conv_b" not in cuts and "relu_b" not in cuts  # the skip connection still holds 'stem' there
    assert "pixels" not in cuts and "features" not in cuts


def test_node_weights_are_what_the_device_counts(featurizer):
    weights = node_weight_bytes(featurizer, "fp32")
    assert sorted(weight for weight in weights if weight) == [CONV_A, CONV_BC, CONV_BC]
    assert sum(weights) == cost_report(featurizer, "fp32", load_profile("arria10")).graph.weight_bytes


def test_plan_takes_the_fewest_parts_and_balances_them(featurizer):
    assert plan_split(featurizer, "fp32", 10_000).parts == 1
    plan = plan_split(featurizer, "fp32", SMALL_DEVICE_BYTES)
    assert plan.parts == 2 and plan.cuts == ("block",)
    assert plan.part_weight_bytes == (CONV_A + CONV_BC, CONV_BC)
    three = plan_split(featurizer, "fp32", CONV_BC)
    assert three.parts == 3 and three.part_weight_bytes == (CONV_A, CONV_BC, CONV_BC)


def test_a_layer_bigger_than_the_device_is_refused_naming_it(featurizer):
    with pytest.raises(ResourceExhausted, match=r"between tensor 'stem' and tensor 'block' take 2,336 bytes .* holds 2,000"):
        plan_split(featurizer, "fp32", 2000)


def test_split_service_chains_parts_that_each_fit_and_answer_like_the_whole(service_dir, profile, tmp_path):
    result = split_service(service_dir, tmp_path / "split", profile, PipelineSettings(home=tmp_path))
    assert result.parts == 2 and result.cuts == ("block",) and result.max_abs_diff <= 1e-6
    split = load_service(tmp_path / "split")
    assert [stage.name for stage in split.stages] == ["featurizer.part1", "featurizer.part2", "head"]
    assert [len(segment) for segment in segments(split)] == [1, 2]
    assert split.stages[0].outputs[0].name == "block" and split.stages[0].outputs[0].shape == (-1, 8, 32, 32)
    assert split.source[SOURCE_SPLIT_FROM] == str(service_dir.resolve())
    device = load_profile(profile)
    for stage in split.stages[:2]:
        assert cost_report(tmp_path / "split" / stage.file, "fp32", device).fits

    pixels = np.random.default_rng(3).normal(0, 50, (2, 32, 32, 3)).astype(np.float32)

    def run(path, feeds):
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, feeds)[0]

    whole = run(service_dir / "featurizer.onnx", {"pixels": pixels})
    block = run(tmp_path / "split" / "featurizer.part1.onnx", {"pixels": pixels})
    chained = run(tmp_path / "split" / "featurizer.part2.onnx", {"block": block})
    np.testing.assert_allclose(chained, whole, rtol=0, atol=1e-6)


def test_a_model_that_fits_is_not_split(service_dir, tmp_path):
    with pytest.raises(InvalidServiceDefinition, match="fits one arria10 device"):
        split_service(service_dir, tmp_path / "split", "arria10", PipelineSettings(home=tmp_path))
    result = fit_to_device(service_dir, "arria10", PipelineSettings(home=tmp_path))
    assert not result.split and result.service_dir == service_dir.resolve()


def test_fit_to_device_splits_once_and_reuses_the_split(service_dir, profile, tmp_path):
    settings = PipelineSettings(home=tmp_path)
    first = fit_to_device(service_dir, profile, settings)
    assert first.split and first.service_dir == tmp_path / "split" / "deep-1-small-fpga"
    stamp = (first.service_dir / "service.json").stat().st_mtime_ns
    again = fit_to_device(service_dir, profile, settings)
    assert again.parts == 2 and (again.service_dir / "service.json").stat().st_mtime_ns == stamp
    assert fit_to_device(first.service_dir, profile, settings).service_dir == first.service_dir


def test_a_layer_cut_by_columns_is_a_part_written_whole_for_its_node_to_cut(tmp_path):
    source = write_wide_service(tmp_path / "wide")
    profile = small_device_profile(tmp_path / "profiles", WIDE_DEVICE_BYTES)
    result = split_service(source, tmp_path / "split", profile, PipelineSettings(home=tmp_path))
    assert (result.parts, result.devices, result.cuts) == (2, 4, ("hidden",)) and result.max_abs_diff <= 1e-6
    split = load_service(tmp_path / "split")
    assert [stage.file for stage in split.stages] == ["featurizer.part1.onnx", "featurizer.part2.onnx", "head.onnx"]
    device = load_profile(profile)
    part1, part2 = (cost_report(tmp_path / "split" / stage.file, "fp32", device) for stage in split.stages[:2])
    assert part1.fits and not part2.fits  # fc2 whole: 16,640 bytes, which its node cuts over three devices
    assert part2.graph.weight_bytes == 64 * 64 * 4 + 64 * 4
    assert fit_to_device(source, profile, PipelineSettings(home=tmp_path)).devices == 4
    again = fit_to_device(tmp_path / "split", profile, PipelineSettings(home=tmp_path))  # a split deploys as it is
    assert (again.service_dir, again.parts, again.devices) == ((tmp_path / "split").resolve(), 2, 4)
