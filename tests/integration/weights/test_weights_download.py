"""ImageNet weights obtained like Keras does, against a real HTTP server on 127.0.0.1 started by the test.

The served file is a ResNet-50 (notop) weights file made here from the Keras architecture, under its
published name, with its real sha256 in a test manifest.
"""

from __future__ import annotations

import errno
import io
import json
import shutil
from pathlib import Path

import pytest

from fpgaflow.tasks.featurizers import weights_store
from fpgaflow.tasks.featurizers.weights_download import Progress
from fpgaflow.tasks.featurizers.weights_store import (
    WeightsDiskFull,
    WeightsHashMismatch,
    WeightsUnreachable,
    cache_dir,
    choose_weights,
    import_file,
    manifest_of,
    obtain,
)
from fpgaflow.tasks.settings import PipelineSettings
from tests.fixtures.settings import reload_settings
from tests.fixtures.weights_server import (
    class_index_file,
    closed_port_url,
    keras_weights_file,
    sha256_of,
    weights_server,
    write_manifest,
)

NAME = "resnet50_notop"


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("published")
    return {
        NAME: keras_weights_file(directory, "ResNet50", include_top=False),
        "imagenet_class_index": class_index_file(directory),
    }


@pytest.fixture
def server(generated):
    with weights_server({path.name: path for path in generated.values()}) as running:
        yield running


def settings_for(tmp_path: Path, published_url: str, generated: dict[str, Path], **fields) -> PipelineSettings:
    manifest = write_manifest(tmp_path / "manifest.json", generated, published_url)
    defaults = {
        "weights_manifest": manifest,
        "weights_url": "",
        "weights_retries": 2,
        "weights_retry_backoff_seconds": 0.0,
        "weights_timeout_seconds": 5.0,
        "imagenet_weights_dir": tmp_path / "keras-cache",
    }
    return PipelineSettings(**(defaults | fields))


def leftovers(settings: PipelineSettings) -> list[str]:
    directory = cache_dir(settings)
    return sorted(path.name for path in directory.iterdir()) if directory.exists() else []


def test_download_verifies_and_caches_then_a_second_call_is_a_cache_hit(tmp_path, server, generated):
    settings = settings_for(tmp_path, server.url, generated)
    entry = manifest_of(settings).get(NAME)
    out = io.StringIO()
    path = obtain(entry, settings, stream=out)
    assert path == cache_dir(settings) / generated[NAME].name
    assert sha256_of(path) == sha256_of(generated[NAME])
    assert f"downloading {entry.file} from {server.url}/{entry.file}" in out.getvalue()
    assert "sha256 verified" in out.getvalue()
    assert obtain(entry, settings, stream=out) == path
    assert server.requests[entry.file] == 1  # the second call never asked the server
    assert leftovers(settings) == [entry.file]


def test_mirror_url_replaces_the_published_one(tmp_path, server, generated):
    settings = settings_for(tmp_path, closed_port_url(), generated, weights_url=server.url + "/")
    path = obtain(manifest_of(settings).get(NAME), settings, stream=io.StringIO())
    assert sha256_of(path) == sha256_of(generated[NAME]) and server.requests[generated[NAME].name] == 1


def test_a_verified_file_in_the_keras_cache_is_reused_without_a_request(tmp_path, server, generated):
    settings = settings_for(tmp_path, server.url, generated)
    settings.imagenet_weights_dir.mkdir()
    shutil.copy(generated[NAME], settings.imagenet_weights_dir)
    out = io.StringIO()
    path = obtain(manifest_of(settings).get(NAME), settings, stream=out)
    assert path.parent == cache_dir(settings) and "taken from the Keras cache" in out.getvalue()
    assert sum(server.requests.values()) == 0


def test_wrong_hash_says_expected_and_got_and_keeps_nothing(tmp_path, server, generated):
    settings = settings_for(tmp_path, server.url, generated)
    manifest = settings.weights_manifest.read_text().replace(sha256_of(generated[NAME]), "0" * 64)
    settings.weights_manifest.write_text(manifest)
    with pytest.raises(WeightsHashMismatch) as caught:
        obtain(manifest_of(settings).get(NAME), settings, stream=io.StringIO())
    message = str(caught.value)
    assert f"expected sha256 {'0' * 64}, got {sha256_of(generated[NAME])}" in message
    assert "nothing was kept in the cache" in message
    assert leftovers(settings) == []


def test_a_cut_connection_is_retried_and_then_completes(tmp_path, server, generated):
    settings = settings_for(tmp_path, server.url, generated)
    file = generated[NAME].name
    server.cut[file] = 1
    out = io.StringIO()
    path = obtain(manifest_of(settings).get(NAME), settings, stream=out)
    assert sha256_of(path) == sha256_of(generated[NAME]) and server.requests[file] == 2
    assert "retry 1 of 2" in out.getvalue()


def test_a_connection_cut_every_time_ends_in_a_clear_error_and_no_half_file(tmp_path, server, generated):
    settings = settings_for(tmp_path, server.url, generated)
    file = generated[NAME].name
    server.cut[file] = 10
    with pytest.raises(WeightsUnreachable) as caught:
        obtain(manifest_of(settings).get(NAME), settings, stream=io.StringIO())
    message = str(caught.value)
    assert "connection cut" in message and "3 attempt(s)" in message
    assert "FPGAFLOW_WEIGHTS_URL" in message and "fpgaflow weights import FILE" in message and "--weights none" in message
    assert server.requests[file] == 3
    assert leftovers(settings) == []


def test_server_down_names_the_timeout_and_the_three_ways_out(tmp_path, generated):
    settings = settings_for(tmp_path, closed_port_url(), generated, weights_retries=1)
    with pytest.raises(WeightsUnreachable) as caught:
        obtain(manifest_of(settings).get(NAME), settings, stream=io.StringIO())
    message = str(caught.value)
    assert "Connection refused" in message and "2 attempt(s), timeout 5 s" in message
    assert "FPGAFLOW_WEIGHTS_URL" in message and "fpgaflow weights import FILE" in message and "--weights none" in message
    assert leftovers(settings) == []


def test_disk_full_is_named_and_leaves_no_file(tmp_path, server, generated, monkeypatch):
    def half_then_full(url, destination, timeout, label, stream):
        destination.write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(weights_store, "download", half_then_full)
    settings = settings_for(tmp_path, server.url, generated)
    with pytest.raises(WeightsDiskFull, match="no space left on the device of .* while writing resnet50_weights"):
        obtain(manifest_of(settings).get(NAME), settings, stream=io.StringIO())
    assert leftovers(settings) == []


def test_import_recognises_a_renamed_file_by_content_and_refuses_a_wrong_one(tmp_path, generated):
    settings = settings_for(tmp_path, closed_port_url(), generated)
    renamed = tmp_path / "from-usb.h5"
    shutil.copy(generated[NAME], renamed)
    entry, cached = import_file(renamed, settings)
    assert entry.name == NAME and cached == cache_dir(settings) / generated[NAME].name
    assert sha256_of(cached) == sha256_of(generated[NAME])

    corrupt = tmp_path / "corrupt" / generated[NAME].name
    corrupt.parent.mkdir()
    content = bytearray(generated[NAME].read_bytes())
    content[len(content) // 2] ^= 0xFF
    corrupt.write_bytes(bytes(content))
    cache_dir(settings).joinpath(generated[NAME].name).unlink()
    with pytest.raises(WeightsHashMismatch, match=f"expected sha256 {sha256_of(generated[NAME])}"):
        import_file(corrupt, settings)
    assert leftovers(settings) == []
    with pytest.raises(WeightsHashMismatch, match="none of the ImageNet files"):
        import_file(tmp_path / "manifest.json", settings)


def test_auto_falls_back_to_seeded_init_and_says_why(tmp_path, generated):
    settings = settings_for(tmp_path, closed_port_url(), generated, weights_auto_timeout_seconds=2.0)
    choice = choose_weights("auto", "resnet50", settings, stream=io.StringIO())
    assert choice.used == "none" and choice.fell_back
    assert "seeded random initialisation" in choice.note and "Connection refused" in choice.note


def test_auto_uses_imagenet_when_it_can_be_had(tmp_path, server, generated):
    settings = settings_for(tmp_path, server.url, generated)
    choice = choose_weights("auto", "resnet50", settings, stream=io.StringIO())
    assert choice.used == "imagenet" and not choice.fell_back and "verified" in choice.note


def test_the_featurizer_loads_the_downloaded_file(tmp_path, server, generated):
    import keras
    import numpy as np

    from fpgaflow.tasks.featurizers.catalog import build_featurizer

    settings = settings_for(tmp_path, server.url, generated)
    featurizer = build_featurizer("resnet50", "imagenet", 32, settings=settings)
    assert featurizer.info.weights == "imagenet"
    reference = keras.applications.ResNet50(include_top=False, weights=str(generated[NAME]), input_shape=(32, 32, 3))
    layer = "conv5_block3_3_conv"
    np.testing.assert_array_equal(featurizer.model.get_layer(layer).kernel.numpy(), reference.get_layer(layer).kernel.numpy())


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_a_bar_on_a_terminal_and_plain_lines_otherwise():
    plain, terminal = io.StringIO(), _Terminal()
    for stream in (plain, terminal):
        progress = Progress("f.h5", 100_000_000, stream)
        progress.start("http://mirror/f.h5")
        for received in range(0, 100_000_001, 5_000_000):
            progress.update(received)
        progress.finish()
    assert "\r" not in plain.getvalue()
    assert plain.getvalue().splitlines()[1:] == [f"  f.h5: {p}% ({p:.1f} MB of 100.0 MB)" for p in (0, 25, 50, 75, 100)]
    assert terminal.getvalue().count("\r") == 21 and "[##############################] 100%" in terminal.getvalue()


@pytest.fixture
def cli_settings(tmp_path, generated, monkeypatch):
    """The fpgaflow command's settings pointed at the test manifest (the published URL: nothing listens)."""

    def point_at(server_url: str) -> None:
        manifest = write_manifest(tmp_path / "cli-manifest.json", generated, closed_port_url())
        monkeypatch.setenv("FPGAFLOW_WEIGHTS_MANIFEST", str(manifest))
        monkeypatch.setenv("FPGAFLOW_WEIGHTS_URL", server_url)
        monkeypatch.setenv("FPGAFLOW_WEIGHTS_RETRIES", "0")
        reload_settings()

    return point_at


def test_weights_list_fetch_and_import_commands(tmp_path, server, generated, cli_settings, capsys):
    from fpgaflow.flows.cli import main

    cli_settings(server.url)
    assert main(["weights", "list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[0].split() == [
        NAME,
        f"{generated[NAME].stat().st_size / 1e6:.1f}",
        "MB",
        "sha256",
        sha256_of(generated[NAME]),
        "not",
        "cached",
    ]
    assert main(["weights", "fetch", NAME]) == 0
    assert capsys.readouterr().out.strip().endswith(f"cache/weights/{generated[NAME].name}")
    assert main(["weights", "list", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows[0]["cached"].endswith(generated[NAME].name) and rows[1]["cached"] is None
    assert main(["weights", "import", str(generated["imagenet_class_index"])]) == 0
    assert "imagenet_class_index: sha256 verified, copied to" in capsys.readouterr().out
    assert main(["doctor"]) == 0
    assert "2 of 2 cached (resnet50_notop, imagenet_class_index)" in capsys.readouterr().out
    assert main(["weights", "fetch", "resnet18"]) == 2
    assert "no ImageNet file is called 'resnet18'" in capsys.readouterr().err


def test_run_without_its_weights_exits_2_before_any_step(digits_dir, cli_settings, capsys, fpgaflow_home):
    from fpgaflow.flows.cli import main

    cli_settings(closed_port_url())
    assert main(["run", str(digits_dir), "--input-size", "32"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("fpgaflow run: error: cannot download resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5")
    assert "Connection refused" in error and "--weights none" in error
    assert not (fpgaflow_home / "mlflow.db").exists() and not list((fpgaflow_home / "cache" / "weights").iterdir())
