"""Where Gokku keeps its state (GOKKU_ROOT) and the layout under it (ARCHITECTURE.md)."""

import os
from pathlib import Path
from typing import NamedTuple

from gokku.names import check_name

SYSTEM_ROOT = Path("/opt/gokku")


def default_root() -> Path:
    """``/opt/gokku`` for root and for the system user that owns it (``ops/install``
    makes one), else a per-user data dir, so any user can try Gokku."""
    try:
        system_owner = SYSTEM_ROOT.stat().st_uid
    except OSError:
        system_owner = 0
    if os.geteuid() in (0, system_owner):
        return SYSTEM_ROOT
    data_home = os.environ.get("XDG_DATA_HOME") or os.path.join(Path.home(), ".local", "share")
    return Path(data_home) / "gokku"


class Root(NamedTuple):
    """The state directory; every path Gokku touches is derived here from checked names."""

    path: Path

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "Root":
        env = os.environ if environ is None else environ
        value = env.get("GOKKU_ROOT")
        return cls(Path(value).absolute() if value else default_root())

    @property
    def plugins(self) -> Path:
        return self.path / "plugins"

    @property
    def services(self) -> Path:
        return self.path / "services"

    @property
    def apps(self) -> Path:
        return self.path / "apps"

    @property
    def repos(self) -> Path:
        return self.path / "repos"

    @property
    def scripts(self) -> Path:
        return self.path / "scripts"

    @property
    def helpers(self) -> Path:
        return self.scripts / "plugin-helpers.sh"

    @property
    def locks(self) -> Path:
        return self.path / "locks"

    @property
    def log(self) -> Path:
        return self.path / "log"

    @property
    def ssh(self) -> Path:
        return self.path / "ssh"

    def plugin_dir(self, name: str) -> Path:
        return self.plugins / check_name("plugin", name)

    def plugin_settings(self, name: str) -> Path:
        """What admins set on a plugin (config values, pin, disabled): beside its tree,
        which an update replaces whole."""
        return self.path / "plugin-settings" / f"{check_name('plugin', name)}.json"

    def service_dir(self, name: str) -> Path:
        return self.services / check_name("service", name)

    def app_dir(self, name: str) -> Path:
        return self.apps / check_name("app", name)

    def repo(self, app: str) -> Path:
        return self.repos / f"{check_name('app', app)}.git"

    def env_file(self, app: str, env: str = "shared") -> Path:
        return self.app_dir(app) / check_name("environment", env) / ".env"
