"""The Debian packages a plugin needs (``system_packages:`` in plugin.yml).

They are installed only when root asks, on the server (``plugins:install-dependencies``,
Dokku's command): installing a plugin over SSH must never run apt-get as a side effect.
``plugins:add`` only says which are missing.
"""

import subprocess

from gokku.context import Context
from gokku.errors import ScriptFailed
from gokku.plugins.registry import Plugin
from gokku.runner import base_env, run

APT_LOCK_SECONDS = 300  # another apt run (unattended-upgrades) holds the lock: wait for it


def needed(plugin: Plugin) -> list[str]:
    names = plugin.record.get("system_packages")
    return [str(n) for n in names] if isinstance(names, list) else []


def missing(names: list[str]) -> list[str]:
    """The packages of ``names`` that dpkg does not have installed (all of them where
    there is no dpkg)."""
    if not names:
        return []
    try:
        listed = subprocess.run(
            ["dpkg-query", "-W", "-f=${Package} ${db:Status-Status}\\n", *names],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
    except FileNotFoundError:
        return list(names)
    installed = {
        words[0] for words in map(str.split, listed.splitlines()) if words[1:] == ["installed"]
    }
    return [name for name in names if name not in installed]


def report_missing(ctx: Context, plugin: Plugin) -> None:
    """One line when some of the plugin's packages are not installed."""
    absent = missing(needed(plugin))
    if absent:
        ctx.warn(
            f"plugin {plugin.name} needs system packages that are not installed: "
            f"{', '.join(absent)} (as root on the server: gokku plugins:install-dependencies "
            f"{plugin.name})"
        )


def install(ctx: Context, plugin: Plugin) -> None:
    """``apt-get install`` the plugin's packages that are missing, and only those."""
    absent = missing(needed(plugin))
    if not absent:
        ctx.info(f"Every system package plugin {plugin.name} needs is installed")
        return
    ctx.info(f"Installing {', '.join(absent)} for plugin {plugin.name}")
    env = {**base_env(ctx), "DEBIAN_FRONTEND": "noninteractive"}
    command = [
        "apt-get",
        "install",
        "-y",
        "--no-install-recommends",
        "-o",
        f"DPkg::Lock::Timeout={APT_LOCK_SECONDS}",
        *absent,
    ]
    code = run(ctx, command, ctx.root.path, env)
    if code != 0:
        raise ScriptFailed(f"apt-get install {' '.join(absent)} exited {code}", code)
    still = missing(absent)
    if still:
        raise ScriptFailed(f"still not installed after apt-get: {', '.join(still)}", 1)
