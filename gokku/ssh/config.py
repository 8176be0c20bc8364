"""Settings of the SSH doors, from the ``ssh:`` section of ``GOKKU_ROOT/gokku.yml``.

```yaml
ssh:
  host: 0.0.0.0          # embedded server (gokku serve); --host/--port win over these
  port: 2222
  user: gokku            # the only login name the embedded server accepts
  login_timeout: 20      # seconds to finish authentication (the login grace)
  keepalive_interval: 15 # seconds between keepalives; 0 turns them off
  keepalive_count_max: 4 # unanswered keepalives before the connection is dropped
  max_auth_tries: 6      # refused keys per connection before it is dropped
  max_startups: "64:30:256"  # unauthenticated connections per worker: OpenSSH's
                             # start:rate:full (quote it: YAML reads 10:30:100 as a number)
  max_startups_per_address: 64  # unauthenticated connections per worker from one address
  max_connections: 256   # logged-in connections; all these count across all workers
  admin_connections: 16  # of max_connections, kept for admin keys: members get the rest
  max_connections_per_address: 64  # this and the per-key caps hold member keys only
  max_connections_per_key: 16
  max_sessions: 10       # sessions (commands) open at once on one connection
  max_sessions_per_key: 32  # on all of the key's connections
  workers: 0             # server processes sharing the port; 0: one per CPU core
  gokku_command: /usr/local/bin/gokku   # what the OpenSSH door's forced command runs
  ciphers: aes128-gcm@openssh.com,aes256-gcm@openssh.com  # offered, comma-separated
  rekey_limit: 1073741824  # bytes sent on a connection before its keys are renewed
```

The cipher offer decides throughput: a client takes the first of *its* preferences the
server offers, and OpenSSH's client prefers chacha20-poly1305, which costs asyncssh about
twice the CPU per byte of AES-GCM (bench/throughput.py). Clients without AES-GCM (PuTTY
before 0.76) need ``chacha20-poly1305@openssh.com`` or ``aes128-ctr`` added here.

Every key is optional; unknown keys and wrong types are refused, so a typo does not
silently leave a limit at its default.
"""

import shlex
from typing import Any, NamedTuple

from gokku.errors import GokkuError
from gokku.paths import Root

CONFIG_FILE = "gokku.yml"
KINDS = {int: "an integer", float: "a number", str: "a string"}
SECTION = "ssh"
POSITIVE = ("rekey_limit",)


class SSHConfig(NamedTuple):
    """The ``ssh:`` settings of gokku.yml, defaults for what is not set."""

    host: str = "127.0.0.1"
    port: int = 2222
    user: str = "gokku"
    login_timeout: float = 20.0
    keepalive_interval: float = 15.0
    keepalive_count_max: int = 4
    max_auth_tries: int = 6
    max_startups: str = "64:30:256"
    max_startups_per_address: int = 64
    max_connections: int = 256
    admin_connections: int = 16
    max_connections_per_address: int = 64
    max_connections_per_key: int = 16
    max_sessions: int = 10
    max_sessions_per_key: int = 32
    workers: int = 0
    gokku_command: str = ""
    ciphers: str = "aes128-gcm@openssh.com,aes256-gcm@openssh.com"
    rekey_limit: int = 1 << 30

    def startups(self) -> tuple[int, float, int]:
        """``max_startups`` as (start, drop rate 0-1, full), or a GokkuError saying why not."""
        parts = self.max_startups.split(":")
        if len(parts) == 1:
            parts = [parts[0], "100", parts[0]]
        if len(parts) != 3 or not all(part.isdigit() for part in parts):
            raise GokkuError("ssh.max_startups must be START:RATE:FULL, e.g. 64:30:256 (or FULL)")
        start, rate, full = (int(part) for part in parts)
        if not 0 < start <= full or rate > 100:
            raise GokkuError("ssh.max_startups: need 0 < START <= FULL and RATE <= 100")
        return start, rate / 100, full

    def member_connections(self) -> int:
        """How many logged-in connections member keys may hold together (the rest is kept
        for admins, so that members filling the server never lock them out), or a
        GokkuError when the reserve is larger than the whole."""
        if self.admin_connections > self.max_connections:
            raise GokkuError(
                f"ssh.admin_connections ({self.admin_connections}) must not exceed "
                f"ssh.max_connections ({self.max_connections})"
            )
        return self.max_connections - self.admin_connections

    def gokku_argv(self) -> list[str]:
        """How to run ``gokku`` from a forced command: this interpreter unless configured.

        sshd runs the forced command with an emptied environment, so the default is an
        absolute interpreter path rather than whatever ``gokku`` PATH would find.
        """
        from gokku.ssh import gokku_argv

        if self.gokku_command:
            return shlex.split(self.gokku_command)
        return gokku_argv()


def load(root: Root) -> SSHConfig:
    """The ``ssh:`` settings of ``root``'s gokku.yml, defaults for whatever is missing."""
    section = read_settings(root).get(SECTION) or {}
    if not isinstance(section, dict):
        raise GokkuError(f"{root.path / CONFIG_FILE}: '{SECTION}' must be a mapping")
    return _from_mapping(section, f"{root.path / CONFIG_FILE}: {SECTION}")


def read_settings(root: Root) -> dict[str, Any]:
    """The whole of ``root``'s gokku.yml (``{}`` when there is none)."""
    path = root.path / CONFIG_FILE
    if not path.is_file():
        return {}
    import yaml

    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise GokkuError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(document, dict):
        raise GokkuError(f"{path}: expected a mapping at the top level")
    return document


def _from_mapping(section: dict[str, Any], where: str) -> SSHConfig:
    defaults = SSHConfig._field_defaults
    unknown = sorted(set(section) - set(defaults))
    if unknown:
        raise GokkuError(f"{where}: unknown setting(s) {', '.join(map(str, unknown))}")
    values = {}
    for key, value in section.items():
        wanted = type(defaults[key])
        if wanted is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, wanted) or isinstance(value, bool):
            raise GokkuError(f"{where}.{key} must be {KINDS[wanted]}, got {value!r}")
        if wanted in (int, float) and value < 0:
            raise GokkuError(f"{where}.{key} must not be negative")
        if key in POSITIVE and value < 1:
            raise GokkuError(f"{where}.{key} must be at least 1")
        values[key] = value
    return SSHConfig(**values)
