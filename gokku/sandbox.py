"""Running an app's own code (a build step, the app's command) where it cannot reach Gokku,
and the clients a member drives (psql: its ``\\!`` runs shell commands) likewise.

Pushed code is its app owner's code, and a member who may push is not the server: a
plugin runs that code with the ``run_in_sandbox APP -- COMMAND`` helper, which ends here,
and a client with ``run_client_in_sandbox VAR... -- COMMAND`` (``run_client``).
The command runs in bubblewrap (``bwrap``) with a user namespace of its own, so it works
without privileges and is refused where user namespaces are not available:

- it sees the system read-only (``/usr``, ``/etc``), a fresh ``/tmp``, ``/proc`` of its
  own pid namespace, and of GOKKU_ROOT only the directory it was started in (the deploy's
  checkout, read-write) and the app's ``.env`` (read-only): not the key registry, not the
  services, not the other apps, not the helpers;
- its environment is the app's variables, read from the ``.env`` the way every other
  reader does (``gokku.envfile``), over a default PATH and HOME; nothing of the plugin's;
- no capabilities and no new privileges (bwrap sets no_new_privs; setuid binaries do not
  raise them), no user namespaces inside, a session of its own (no terminal injection);
- it dies with the script that started it (``--die-with-parent``, and the pid namespace
  takes everything it started along).

The network is shared: a build fetches its dependencies and an app reaches the services
linked to it, both over the network, as in Dokku's containers. So whatever listens on the
host's loopback is in reach: a service there must ask for its password, as the bundled
ones do (scram-sha-256, requirepass).

A user namespace changes no kernel uid: a sandbox started by root would still own root's
files, and read ``/etc/shadow`` or the host keys through the read-only ``/etc``. So it is
refused while Gokku runs as root (a root-owned GOKKU_ROOT: ops/install gives it a user of
its own instead).

An admin on a host without user namespaces, or who runs Gokku as root, may set ``sandbox:
off`` in gokku.yml; the command then runs as the server's user with the same environment,
and ``gokku serve`` and ``gokku doctor`` say so.
"""

import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import NoReturn

from gokku import apps
from gokku.errors import GokkuError
from gokku.paths import Root
from gokku.runner import DEFAULT_PATH
from gokku.ssh.config import CONFIG_FILE, read_settings

SETTING = "sandbox"
AS_ROOT = "this Gokku runs as root, whose files a sandbox would still own"
AS_ROOT_REMEDY = (
    f"give GOKKU_ROOT to a user of its own (as ops/install does) or set '{SETTING}: off' "
    f"in {CONFIG_FILE}"
)
# Namespaces: all of them but the network's, a user namespace even for root (it is what
# makes the sandbox unprivileged, and where none can be made the sandbox is refused), none
# inside; the process can gain nothing.
ISOLATION = (
    "--unshare-all",
    "--share-net",
    "--unshare-user",
    "--disable-userns",
    "--die-with-parent",
    "--cap-drop",
    "ALL",
)
# A session of its own: it takes its terminal nowhere (no TIOCSTI into the caller's). Only
# a client that a person drives on a terminal keeps it, to get their Ctrl-C.
NEW_SESSION = "--new-session"
SYSTEM_DIRS = ("/usr", "/etc")
# Top-level directories that merged-/usr systems make symlinks into /usr.
SYSTEM_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# Where /etc/resolv.conf points on hosts that run systemd-resolved.
RESOLVER_DIR = "/run/systemd/resolve"


def enabled(root: Root) -> bool:
    """Whether gokku.yml leaves the sandbox on (the default); ``sandbox: off`` turns it off."""
    value = read_settings(root).get(SETTING, True)
    if value in (True, "on"):
        return True
    if value in (False, "off"):
        return False
    raise GokkuError(f"{root.path / CONFIG_FILE}: {SETTING} must be on or off, not {value!r}")


def warning(root: Root) -> str | None:
    """What an admin must hear when apps' code cannot run sandboxed as set up: the sandbox
    is off, or Gokku runs as root and it refuses (``serve`` and ``doctor`` say it)."""
    if not enabled(root):
        return (
            f"{SETTING}: off in {CONFIG_FILE}: plugins run apps' code (a push's build) as "
            "this server's user, with everything that user can reach"
        )
    if os.geteuid() == 0:
        return f"{AS_ROOT}: it refuses to run apps' code; {AS_ROOT_REMEDY}"
    return None


def run(root: Root, app: str, command: list[str]) -> NoReturn:
    """Replace this process with ``command`` run for ``app`` (see the module's doc); it
    returns only by raising, with the reason nothing ran."""
    apps.require(root, app)
    workdir = _workdir(root, app)
    env = {"PATH": DEFAULT_PATH, "HOME": str(workdir), **apps.read_env(root, app)}
    if not enabled(root):
        _exec(command, env, [])
    bwrap = _bwrap()
    if os.geteuid() == 0:
        raise GokkuError(f"no sandbox for apps' code: {AS_ROOT}: nothing was run; {AS_ROOT_REMEDY}")
    env_file = root.env_file(app).resolve()
    # An empty GOKKU_ROOT over the real one, holding only the two mount points, and made
    # read-only once they are in: nothing written there could even look like state.
    state = str(root.path.resolve())
    mounts = [*_system_mounts(), "--tmpfs", state]
    mounts += ["--bind", str(workdir), str(workdir), "--chdir", str(workdir)]
    if env_file.is_file():
        mounts += ["--ro-bind", str(env_file), str(env_file)]
    mounts += ["--remount-ro", state]
    _enter(bwrap, [NEW_SESSION, *mounts], command, env)


def run_client(root: Root, command: list[str], env: dict[str, str], trusted: bool) -> NoReturn:
    """Replace this process with a client program that the caller drives, such as psql,
    whose ``\\!`` runs shell commands: sandboxed as apps' code is, without any of
    GOKKU_ROOT, with ``env`` (the connection's variables) over a default PATH and a HOME in
    the sandbox's own /tmp. Where no sandbox can be made (Gokku runs as root, no user
    namespaces) a ``trusted`` caller (an admin, who may have the account anyway) runs it
    as it is, anyone else is refused; with ``sandbox: off`` it runs as it is for all."""
    env = {"PATH": DEFAULT_PATH, "HOME": "/tmp", **env}
    bwrap = client_sandbox(root, trusted)
    if bwrap is None:
        _exec(command, env, [])
    terminal = os.isatty(0)
    if terminal:
        # The terminal's Ctrl-C goes to its whole process group: to the client, which
        # cancels a query, and to bwrap, which would die of it and take the client along.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    session = [] if terminal else [NEW_SESSION]
    _enter(bwrap, [*session, *_system_mounts(), "--chdir", "/tmp"], command, env)


def client_sandbox(root: Root, trusted: bool) -> str | None:
    """The bwrap a client the caller drives runs in (``run_client``), or None to run it as
    it is (``sandbox: off``, or a ``trusted`` caller where no sandbox can be made); raises,
    with the reason, for anyone else where none can be made. A command that reads its
    input before it runs a client asks this first, so that a refusal is its only line."""
    if not enabled(root):
        return None
    try:
        if os.geteuid() == 0:
            raise GokkuError(f"no sandbox for clients: {AS_ROOT}; {AS_ROOT_REMEDY}")
        return _bwrap()
    except GokkuError:
        if trusted:
            return None
        raise


def _enter(bwrap: str, options: list[str], command: list[str], env: dict[str, str]) -> NoReturn:
    """Become bwrap running ``command`` with ``env`` (and its ``options``: mounts...).
    The variables go through a file descriptor (--args), not the command line, where every
    local user could read them in ps; bwrap itself starts with none of them (an
    LD_PRELOAD of the app's would load into bwrap, outside the sandbox)."""
    args = [word for item in env.items() for word in ("--setenv", *item)]
    fd = os.memfd_create("gokku-sandbox-env", 0)
    os.write(fd, b"".join(word.encode() + b"\0" for word in args))
    os.lseek(fd, 0, os.SEEK_SET)
    _exec([bwrap, *ISOLATION, *options, "--args", str(fd), "--", *command], {}, [fd])


def _workdir(root: Root, app: str) -> Path:
    """The directory the command may write: the caller's, which is the app's checkout
    (GOKKU_SOURCE_DIR, where deploy triggers start) or lies outside GOKKU_ROOT."""
    here = Path.cwd()
    state = root.path.resolve()
    if here == state or state in here.parents:
        deploys = root.app_dir(app).resolve() / ".deploys"
        parts = here.relative_to(deploys).parts if deploys in here.parents else ()
        if len(parts) < 2 or not parts[0].startswith("checkout-") or parts[1] != "source":
            raise GokkuError(
                f"run_in_sandbox runs in a deploy's checkout of {app} (GOKKU_SOURCE_DIR) "
                f"or outside {root.path}, not in {here}"
            )
    elif here in state.parents:
        raise GokkuError(f"run_in_sandbox cannot run in {here}: it holds {root.path}")
    return here


def _system_mounts() -> list[str]:
    mounts: list[str] = []
    for path in SYSTEM_DIRS:
        mounts += ["--ro-bind", path, path]
    for path in SYSTEM_LINKS:
        if os.path.islink(path):
            mounts += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            mounts += ["--ro-bind", path, path]
    mounts += ["--ro-bind-try", RESOLVER_DIR, RESOLVER_DIR]
    return [*mounts, "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]


def _bwrap() -> str:
    """bwrap's path, once it has shown that it can make the sandbox here."""
    found = shutil.which("bwrap")
    if found is None:
        reason = "bwrap is not installed (Debian: apt-get install bubblewrap)"
    else:
        probe = subprocess.run(
            [found, *ISOLATION, "--ro-bind", "/", "/", "--", "true"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            env={},
        )
        if probe.returncode == 0:
            return found
        said = probe.stderr.decode(errors="replace").strip().splitlines()
        reason = said[-1] if said else f"bwrap exited {probe.returncode}"
    raise GokkuError(
        f"no sandbox for apps' code on this host ({reason}): nothing was run; "
        f"without user namespaces an admin may set '{SETTING}: off' in {CONFIG_FILE}"
    )


def _exec(command: list[str], env: dict[str, str], keep: list[int]) -> NoReturn:
    """Become ``command``: nothing of ours stays open in it but ``keep``."""
    low = 3
    for fd in sorted(keep):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, os.sysconf("SC_OPEN_MAX"))
    try:
        os.execvpe(command[0], command, env)
    except OSError as exc:
        raise GokkuError(f"cannot run {command[0]}: {exc.strerror}") from None
