"""`fpgaflow score` never takes an API key on its command line: `--token-file` or FPGAFLOW_CLIENT_TOKEN instead."""

from __future__ import annotations

from pathlib import Path

import pytest

from fpgaflow.flows.cli import UsageError, main
from fpgaflow.flows.cli.serving import access_token
from tests.fixtures.settings import setting_setter


@pytest.fixture
def client_token(monkeypatch):
    yield from setting_setter(monkeypatch, "FPGAFLOW_CLIENT_TOKEN")


def test_token_on_the_command_line_is_refused_naming_the_ways_to_give_it(tmp_path, capsys):
    image = tmp_path / "cat.jpg"
    image.write_bytes(b"not scored")
    assert main(["score", str(image), "--address", "127.0.0.1:1", "--token", "secret"]) == 2
    err = capsys.readouterr().err
    assert "--token is not accepted" in err and "--token-file PATH" in err and "FPGAFLOW_CLIENT_TOKEN" in err


def test_the_key_comes_from_the_file_else_the_setting(tmp_path, client_token):
    client_token(None)
    assert access_token(None, None) is None
    client_token("from-the-environment")
    assert access_token(None, None) == "from-the-environment"
    key_file = tmp_path / "key"
    key_file.write_text("from-the-file\n")
    assert access_token(None, key_file) == "from-the-file"


@pytest.mark.parametrize(("content", "problem"), [(None, "cannot read it"), ("", "exactly one API key"), ("a\nb\n", "one line")])
def test_an_unusable_token_file_is_named(tmp_path, content, problem):
    key_file = Path(tmp_path / "key")
    if content is not None:
        key_file.write_text(content)
    with pytest.raises(UsageError, match=problem):
        access_token(None, key_file)
