"""One node chaining a featurizer too large for one device over several emulated devices, in process."""

from __future__ import annotations

import numpy as np
import pytest

from fpgaflow.fpga_runtime.dataplane import DataPlane
from fpgaflow.fpga_runtime.errors import ResourceExhausted
from fpgaflow.fpga_runtime.executor import ChainedFpgaStage, ServiceExecutor
from fpgaflow.fpga_runtime.placement.split import plan_split
from tests.fixtures.split_service import (
    SMALL_DEVICE_BYTES,
    WIDE_DEVICE_BYTES,
    small_device_profile,
    write_residual_service,
    write_wide_service,
)
from tests.fixtures.tiny_service import encoded_images, reference_probabilities


@pytest.fixture(scope="module")
def service_dir(tmp_path_factory):
    return write_residual_service(tmp_path_factory.mktemp("service") / "deep", name="deep", version="2")


@pytest.fixture(scope="module")
def profile_path(tmp_path_factory):
    return small_device_profile(tmp_path_factory.mktemp("profiles"))


@pytest.fixture(scope="module")
def images():
    return encoded_images(3)


def test_a_featurizer_larger_than_a_device_is_chained_over_the_devices_the_split_plans(service_dir, profile_path, images):
    import onnx

    planned = plan_split(onnx.load(str(service_dir / "featurizer.onnx")), "fp32", SMALL_DEVICE_BYTES)
    executor = ServiceExecutor(service_dir, profile_path)
    devices = executor.devices
    try:
        assert planned.parts == 2
        assert len(executor.devices) == planned.parts
        assert isinstance(executor.stages[0], ChainedFpgaStage)
        assert [device.loaded.weight_bytes for device in executor.devices] == list(planned.part_weight_bytes)
        np.testing.assert_allclose(
            executor.predict_encoded(images)["probabilities"], reference_probabilities(service_dir, images), rtol=1e-5, atol=1e-6
        )
        assert all(device.stats().runs == 1 for device in executor.devices)
        stats = executor.device_stats()
        assert stats is not None and stats.runs == 1
        modelled = sum(device.cost.latency.seconds for device in executor.devices)
        assert stats.modelled_latency_seconds == pytest.approx(modelled)
        assert executor.modelled_latency_seconds == pytest.approx(modelled)
        assert executor.describe() == (
            f"serving deep v2 in fp32 over 2 × small-fpga, modelled device latency {modelled * 1e3:.3f} ms per image"
        )
    finally:
        executor.close()
    assert all(device.loaded is None for device in devices) and executor.devices == ()


def test_a_featurizer_that_fits_stays_on_one_device(service_dir):
    executor = ServiceExecutor(service_dir, "arria10", max_devices=1)
    try:
        assert len(executor.devices) == 1 and executor.device is executor.devices[0]
        assert executor.describe().startswith("serving deep v2 in fp32 over 1 × arria10, modelled device latency ")
    finally:
        executor.close()


def test_a_cap_below_what_the_model_needs_names_the_count_and_both_ways_out(service_dir, profile_path):
    with pytest.raises(ResourceExhausted) as refused:
        ServiceExecutor(service_dir, profile_path, max_devices=1)
    message = str(refused.value)
    assert "needs 2 small-fpga devices in fp32" in message
    assert "--devices 2 or more" in message
    assert "narrower numeric format (int8 needs 1 device" in message


def test_a_layer_no_device_holds_is_refused_with_the_narrower_formats(service_dir, tmp_path):
    tiny = small_device_profile(tmp_path, onchip_memory_bytes=1000)
    with pytest.raises(
        ResourceExhausted,
        match=r"does not fit device small-fpga: .*no split over several devices fits either .*narrower numeric format \(int8",
    ):
        ServiceExecutor(service_dir, tiny)


def test_the_data_plane_reports_the_chain_as_one_device(service_dir, profile_path, images):
    plane = DataPlane()
    try:
        plane.load(service_dir, profile_path)
        (executor,) = plane.executors()
        executor.predict_encoded(images[:1])
        ((model, version, stats),) = plane.device_stats()
        assert (model, version, stats.profile, stats.runs) == ("deep", "2", "small-fpga", 1)
        assert 0 < stats.utilisation <= 1
    finally:
        plane.close()


def test_without_a_narrower_format_the_way_out_is_a_larger_device(service_dir, tmp_path):
    import yaml

    from fpgaflow.fpga_runtime.profiles import load_profile

    fp32_only = load_profile("arria10").model_copy(
        update={"name": "fp32-part", "onchip_memory_bytes": 1000, "supported_formats": ("fp32",), "mac_units": {"fp32": 64}}
    )
    path = tmp_path / "fp32-part.yaml"
    path.write_text(yaml.safe_dump(fp32_only.model_dump(mode="json"), sort_keys=False))
    with pytest.raises(ResourceExhausted) as refused:
        ServiceExecutor(service_dir, path)
    message = str(refused.value)
    assert message.startswith("model featurizer.onnx does not fit device fp32-part: its weights take 5,568 bytes")
    assert message.endswith("fp32-part supports no numeric format narrower than fp32: use a larger device")


def test_a_layer_larger_than_a_device_runs_as_column_slices_side_by_side(tmp_path, images):
    from fpgaflow.fpga_runtime.placement.cost import sliced_layer_seconds

    service_dir = write_wide_service(tmp_path / "wide")
    profile = small_device_profile(tmp_path / "profiles", WIDE_DEVICE_BYTES)
    executor = ServiceExecutor(service_dir, profile)
    try:
        (chain,) = [runner for runner in executor.stages if isinstance(runner, ChainedFpgaStage)]
        first, wide = chain.parts
        assert len(first.devices) == 1 and len(wide.devices) == 3 and len(executor.devices) == 4
        assert all(device.loaded.weight_bytes <= WIDE_DEVICE_BYTES for device in executor.devices)
        np.testing.assert_allclose(
            executor.predict_encoded(images)["probabilities"], reference_probabilities(service_dir, images), rtol=0, atol=1e-6
        )
        assert all(device.stats().runs == 1 for device in executor.devices)
        slices = [device.cost for device in wide.devices]
        modelled = first.devices[0].cost.latency.seconds + sliced_layer_seconds(
            [report.latency.seconds for report in slices],
            sum(report.graph.output_bytes for report in slices),
            wide.devices[0].profile,
        )
        assert modelled < sum(device.cost.latency.seconds for device in executor.devices)  # the slices overlap
        assert executor.modelled_latency_seconds == pytest.approx(modelled)
        assert executor.device_stats().modelled_latency_seconds == pytest.approx(modelled)
        assert executor.describe() == (
            f"serving wide v1 in fp32 over 4 × small-fpga, modelled device latency {modelled * 1e3:.3f} ms per image; "
            "layer fc2 cut by output columns over 3 of them"
        )
    finally:
        executor.close()
