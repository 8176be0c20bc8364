"""Edges the suite let through when a mutation audit changed them (tests/mutations.md):
``$`` in a bare ``.env`` value, a START below 9000 for ports, a ``.`` in a name."""

import socket
import subprocess

import pytest
from conftest import Gokku


@pytest.mark.parametrize("value", ["$HOME", "a$b", "${PATH}", "$(id)", "cost:$5"])
def test_a_dollar_is_never_written_bare_so_bash_reads_the_value_back(
    gokku: Gokku, value: str
) -> None:
    """No space or quote makes these look unsafe: only the ``$`` does."""
    gokku.ok("apps:create", "api")
    gokku.ok("config:set", "-a", "api", f"V={value}")
    env = gokku.root / "apps" / "api" / "shared" / ".env"
    script = f'set -a; . "{env}"; printf %s "$V"'
    read_back = subprocess.run(["bash", "-c", script], capture_output=True, check=True).stdout
    assert read_back == value.encode()


def _free_port_below_9000() -> int:
    for port in range(8100, 9000):
        with socket.socket() as sock:
            try:
                sock.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    pytest.skip("no free port below 9000")


def test_a_start_below_9000_is_honoured(gokku: Gokku) -> None:
    port = _free_port_below_9000()
    assert gokku.ok("services:next-port", str(port)).stdout == f"{port}\n"


@pytest.mark.parametrize("name", ["api.v2", "a.b", "api."])
def test_a_name_with_a_dot_is_refused_everywhere(gokku: Gokku, name: str) -> None:
    gokku.ok("apps:create", "ok")
    for args in (
        ["apps:create", name],
        ["config:set", "-a", "ok", "--env", name, "K=v"],
        ["services:create", "postgres", "--name", name],
    ):
        result = gokku(*args)
        assert result.code == 2, (args, result.stderr)
        assert "name" in result.stderr and "use 1-63 lowercase letters" in result.stderr
    assert sorted(p.name for p in (gokku.root / "apps").iterdir()) == ["ok"]
    assert sorted(p.name for p in (gokku.root / "apps" / "ok").iterdir()) == [".id", "shared"]
