"""The files an operator copies into place by hand: the sshd snippet must pass the real
``sshd -t`` (a configuration sshd refuses locks the admin out at the next restart) and
act on the gokku user only, and ``authorized_keys_template`` must show exactly the line
Gokku writes. And what ``ops/install`` says last: how to connect from elsewhere."""

import base64
import os
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sshlab import REPO, SSHD, make_key

from gokku import keys
from gokku.paths import Root
from gokku.ssh import gokku_argv
from gokku.ssh.config import SSHConfig, load

SNIPPET = REPO / "ops" / "sshd-gokku.conf"
TEMPLATE = REPO / "authorized_keys_template"
INSTALL = REPO / "ops" / "install"


def debian_config(folder: Path, snippet: Path) -> Path:
    """An sshd_config shaped like Debian's: the drop-in directory's Include first, then
    the global settings Debian ships, a throwaway host key."""
    if os.geteuid() != 0 or not os.path.exists(SSHD):
        pytest.skip("sshd -t needs root and sshd")
    Path("/run/sshd").mkdir(exist_ok=True)
    host_key = folder / "host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
    config = folder / "sshd_config"
    config.write_text(
        textwrap.dedent(
            f"""\
            Include {snippet}
            HostKey {host_key}
            PidFile none
            KbdInteractiveAuthentication no
            UsePAM yes
            X11Forwarding yes
            PrintMotd no
            AcceptEnv LANG LC_*
            Subsystem sftp /usr/lib/openssh/sftp-server
            """
        )
    )
    return config


def sshd_test(config: Path) -> subprocess.CompletedProcess:
    return subprocess.run([SSHD, "-t", "-f", str(config)], capture_output=True, text=True)


def effective(config: Path, user: str) -> dict[str, str]:
    """What sshd would apply to a login as ``user`` (``sshd -T -C``)."""
    spec = f"user={user},host=client.example,addr=127.0.0.1"
    result = subprocess.run(
        [SSHD, "-T", "-f", str(config), "-C", spec], capture_output=True, text=True, check=True
    )
    return dict(line.split(" ", 1) for line in result.stdout.splitlines() if " " in line)


def test_sshd_accepts_the_snippet(tmp_path: Path) -> None:
    result = sshd_test(debian_config(tmp_path, SNIPPET))
    assert (result.returncode, result.stderr) == (0, "")


def test_sshd_t_catches_a_global_only_setting_in_the_match_block(tmp_path: Path) -> None:
    """The check above has teeth: the line the snippet used to carry is refused."""
    broken = tmp_path / "broken.conf"
    broken.write_text(SNIPPET.read_text() + "    PermitUserEnvironment no\n")
    result = sshd_test(debian_config(tmp_path, broken))
    assert result.returncode != 0
    assert "'PermitUserEnvironment' is not allowed within a Match block" in result.stderr


def test_the_snippet_applies_to_the_gokku_user_only(tmp_path: Path) -> None:
    config = debian_config(tmp_path, SNIPPET)
    gokku = effective(config, "gokku")
    assert gokku["authorizedkeysfile"] == "/opt/gokku/ssh/authorized_keys"
    assert gokku["authenticationmethods"] == "publickey"
    assert gokku["disableforwarding"] == "yes"
    assert gokku["permituserrc"] == "no"
    assert gokku["permittty"] == "yes"
    assert gokku["permituserenvironment"] == "no"
    other = effective(config, "root")
    assert other["authorizedkeysfile"] == ".ssh/authorized_keys .ssh/authorized_keys2"
    assert other["disableforwarding"] == "no"
    assert other["x11forwarding"] == "yes"


def test_the_template_shows_the_line_gokku_writes(tmp_path: Path) -> None:
    """The example line, with its placeholders for the fingerprint and the key data, is
    the line an installed Gokku (ops/install: /opt/gokku, the virtualenv's Python)
    writes for a key named NAME."""
    key_type, data, _ = keys.parse(make_key(tmp_path, "k").public)
    fingerprint = keys.fingerprint(base64.b64decode(data))
    python = "/usr/local/lib/gokku/bin/python"
    config = SSHConfig(gokku_command=shlex.join([python, *gokku_argv()[1:]]))
    key = keys.Key(name="NAME", type=key_type, data=data, fingerprint=fingerprint)
    line = keys.authorized_keys_line(Root(Path("/opt/gokku")), config, key)
    shape = line.replace(fingerprint, "SHA256:...").replace(data, data[:24] + "...KEY...")
    examples = [
        line for line in TEMPLATE.read_text().splitlines() if line and not line.startswith("#")
    ]
    assert examples == [shape]


def test_install_ends_with_how_to_connect_from_another_machine(tmp_path: Path) -> None:
    """ops/install sourced defines its functions and installs nothing; its last words
    name the connect command and a gokku.yml line that Gokku reads as all interfaces."""
    said = subprocess.run(
        ["bash", "-c", 'source "$1" && connect_help "$2"', "bash", str(INSTALL), str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert (said.returncode, said.stderr) == (0, "")
    host = subprocess.run(["hostname", "-f"], capture_output=True, text=True).stdout.strip()
    lines = [line.strip() for line in said.stdout.splitlines()]
    assert lines[0] == "-----> Connect from another machine"
    assert f"ssh -p 2222 gokku@{host} help" in lines
    assert f"in {tmp_path}/gokku.yml and restart it" in said.stdout
    (tmp_path / "gokku.yml").write_text(next(line for line in lines if line.startswith("ssh:")))
    assert load(Root(tmp_path)).host == "0.0.0.0"
    # Each way install ends (user install, systemd, foreground server) says it.
    assert INSTALL.read_text().count("\n  connect_help ") == 3


def test_ops_test_keeps_a_group_on_one_worker(tmp_path: Path) -> None:
    """``ops/test`` runs the suite with ``--dist loadgroup`` so that the tests of a group
    (a module's shared servers) run on one worker, one after another. A pytest that
    ignores the ids pytest-xdist gives grouped tests (9.2) spread them over every worker,
    each making the module's fixtures again, and nothing failed."""
    (tmp_path / "test_grouped.py").write_text(
        textwrap.dedent(
            """
            import os
            import pytest

            @pytest.mark.parametrize("n", range(6))
            @pytest.mark.xdist_group("one")
            def test_member(n):
                print("WORKER", os.environ["PYTEST_XDIST_WORKER"])
            """
        )
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "3"]
        + ["--dist", "loadgroup", "-rA", "-q", "test_grouped.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    workers = {line.split()[1] for line in done.stdout.splitlines() if line.startswith("WORKER")}
    assert len(workers) == 1, done.stdout
