"""What Gokku depends on: the asyncssh internals the send path patches (checked at start,
else plain asyncssh), the pin to the version they were read against, the constraints file
installs use, and paramiko kept to the tests."""

import ast
import importlib.metadata
import logging
import tomllib
from collections.abc import Iterator

import asyncssh
import pytest
from asyncssh import channel, connection
from conftest import REPO
from packaging.requirements import Requirement
from packaging.version import Version

from gokku.ssh import sendpath

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _requirements(names: list[str]) -> dict[str, Requirement]:
    return {Requirement(text).name.lower(): Requirement(text) for text in names}


def test_the_installed_asyncssh_is_what_the_patches_were_checked_against() -> None:
    assert sendpath.problems() == []
    assert asyncssh.__version__.startswith(sendpath.CHECKED_VERSION + ".")


def test_asyncssh_is_pinned_to_the_checked_minor_version() -> None:
    pin = _requirements(PYPROJECT["dependencies"])["asyncssh"].specifier
    checked = Version(sendpath.CHECKED_VERSION + ".0")
    assert checked in pin and asyncssh.__version__ in pin
    assert Version(f"{checked.major}.{checked.minor + 1}.0") not in pin


@pytest.fixture
def unpatched() -> Iterator[None]:
    """Install must not have patched this process before (nor after: it must fall back)."""
    assert not getattr(connection.SSHConnection, "_gokku_send_path", False)
    yield
    assert not getattr(connection.SSHConnection, "_gokku_send_path", False)


def _falls_back(caplog: pytest.LogCaptureFixture, expected: str) -> None:
    send_packet, send = connection.SSHConnection.send_packet, connection.SSHConnection._send
    with caplog.at_level(logging.WARNING, logger="gokku.serve"):
        assert sendpath.install() is False
    assert connection.SSHConnection.send_packet is send_packet
    assert connection.SSHConnection._send is send
    (record,) = caplog.records
    message = record.getMessage()
    assert message.startswith("send path not patched, plain asyncssh runs: asyncssh ")
    assert expected in message


def test_a_missing_method_makes_install_fall_back_and_log(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, unpatched: None
) -> None:
    monkeypatch.delattr(channel.SSHChannel, "_flush_send_buf")
    _falls_back(caplog, "SSHChannel._flush_send_buf is missing")


def test_a_changed_signature_makes_install_fall_back_and_log(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, unpatched: None
) -> None:
    monkeypatch.setattr(connection.SSHConnection, "_send", lambda self, data, urgent: None)
    _falls_back(caplog, "SSHConnection._send(self, data, urgent) changed")


def test_a_missing_instance_attribute_makes_install_fall_back_and_log(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, unpatched: None
) -> None:
    monkeypatch.setattr(channel.SSHChannel, "__init__", lambda self, conn: None)
    _falls_back(caplog, "SSHChannel instances no longer get _conn")


def test_constraints_pin_every_dependency_to_what_is_installed() -> None:
    lines = (REPO / "constraints.txt").read_text().splitlines()
    pins = _requirements([line for line in lines if line and not line.startswith("#")])
    for name, requirement in pins.items():
        (spec,) = requirement.specifier
        assert spec.operator == "==", name
        assert importlib.metadata.version(name) == spec.version, name
    wanted = PYPROJECT["dependencies"] + PYPROJECT["optional-dependencies"]["test"]
    assert set(_requirements(wanted)) <= set(pins)
    assert "gokku" not in pins


def test_paramiko_is_a_test_dependency_only() -> None:
    assert "paramiko" not in _requirements(PYPROJECT["dependencies"])
    assert "paramiko" in _requirements(PYPROJECT["optional-dependencies"]["test"])
    for path in (REPO / "gokku").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                assert not any(n.split(".")[0] == "paramiko" for n in names), path
