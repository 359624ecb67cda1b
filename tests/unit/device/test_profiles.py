"""Device profiles load by name or path; bad names and bad files are named in the error."""

from __future__ import annotations

import pytest

from fpgaflow.fpga_runtime.errors import InvalidInput
from fpgaflow.fpga_runtime.numerics import FORMATS
from fpgaflow.fpga_runtime.profiles import known_profiles, load_profile


def test_bundled_profiles_model_the_published_parts():
    arria10, stratix10 = load_profile("arria10"), load_profile("stratix10")
    assert arria10.onchip_memory_bytes == 2_713 * 20_480 // 8
    assert arria10.mac_units["fp32"] == 1_518
    assert arria10.host_link_bytes_per_second == pytest.approx(8e9 * 8 * 128 / 130 / 8, rel=1e-3)
    assert stratix10.onchip_memory_bytes == 11_721 * 20_480 // 8
    assert (stratix10.mac_units["msfp8"], stratix10.clock_hz) == (96_000, 250e6)
    assert stratix10.host_link_bytes_per_second == pytest.approx(2 * arria10.host_link_bytes_per_second)


@pytest.mark.parametrize("name", known_profiles())
def test_every_bundled_profile_supports_only_known_formats_and_cites_its_numbers(name):
    profile = load_profile(name)
    assert set(profile.supported_formats) <= set(FORMATS)
    assert profile.source


def test_known_profiles_are_listed():
    assert {"arria10", "stratix10"} <= set(known_profiles())


def test_profile_loads_from_a_path(tiny_profile_path):
    profile = load_profile(tiny_profile_path)
    assert (profile.name, profile.onchip_memory_bytes, profile.macs_per_cycle("int8")) == ("tiny", 500, 20)
    assert load_profile(str(tiny_profile_path)) == profile


def test_unknown_profile_lists_the_known_ones():
    with pytest.raises(InvalidInput, match="unknown device profile 'virtex7': known profiles are arria10, stratix10"):
        load_profile("virtex7")


def test_profile_whose_formats_lack_mac_units_is_refused(tmp_path, tiny_profile_path):
    path = tmp_path / "broken.yaml"
    path.write_text(
        tiny_profile_path.read_text().replace("supported_formats: [fp32, int8, msfp8]", "supported_formats: [fp32, msfp9]")
    )
    with pytest.raises(InvalidInput, match=r"broken.yaml is invalid: .*supported formats \['msfp9'\] have no entry in mac_units"):
        load_profile(path)


def test_profile_missing_a_field_names_it(tmp_path, tiny_profile_path):
    path = tmp_path / "short.yaml"
    path.write_text(tiny_profile_path.read_text().replace("clock_hz: 1000000\n", ""))
    with pytest.raises(InvalidInput, match="clock_hz: Field required"):
        load_profile(path)


def test_profile_that_is_not_a_mapping_is_refused(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- arria10\n")
    with pytest.raises(InvalidInput, match="must be a mapping"):
        load_profile(path)
