"""Services (``services/SVC/config.json``) and their links to apps.

The record keeps Gokku's fields (name, plugin, container_id, running, linked_apps,
created_at, config) and adds ``env`` (the variables the service gives to linked apps, set
by its plugin through the ``set_service_env`` helper) and ``links`` (which variables each
link wrote where, so unlink removes exactly those and a link can tell who owns a key).
"""

import contextlib
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gokku import apps
from gokku.errors import GokkuError, NotFound
from gokku.names import check_name
from gokku.paths import Root
from gokku.storage import fsync_dir, lock, read_json, write_json

RECORD = "config.json"
CREATING = "creating"
HELD_PORTS = ".held-ports.json"  # port -> until (epoch seconds)
PORT_HOLD_SECONDS = 600
MAX_PORT = 65535


@dataclass
class Service:
    name: str
    path: Path
    data: dict[str, Any]

    @property
    def plugin(self) -> str:
        return str(self.data.get("plugin", ""))

    @property
    def config(self) -> dict[str, Any]:
        return self.data.setdefault("config", {})

    @property
    def links(self) -> list[dict[str, Any]]:
        return self.data.setdefault("links", [])

    def link_for(self, app: str, env: str) -> dict[str, Any] | None:
        return next((x for x in self.links if x["app"] == app and x["env"] == env), None)

    def save(self) -> None:
        self.data["linked_apps"] = sorted({link["app"] for link in self.links})
        write_json(self.path / RECORD, self.data, mode=0o600)  # it holds passwords


@contextlib.contextmanager
def service_lock(root: Root, name: str) -> Iterator[None]:
    with lock(root.locks, f"service-{check_name('service', name)}"):
        yield


@contextlib.contextmanager
def locked_with_its_apps(root: Root, name: str) -> Iterator[Service]:
    """The service's lock, taken after the locks of every app it is linked to (the global
    order: app, then service), and the service as it is under them. A link made to another
    app while the app locks were being taken means trying again with that app too."""
    while True:
        wanted = sorted({x["app"] for x in load(root, name).links})
        with contextlib.ExitStack() as stack:
            for app in wanted:
                stack.enter_context(apps.app_lock(root, app))
            stack.enter_context(service_lock(root, name))
            service = load(root, name)
            if {x["app"] for x in service.links} <= set(wanted):
                yield service
                return


def place(root: Root, name: str, record: dict[str, Any]) -> Service:
    """Make the service's directory with its record in one step (built aside, renamed into
    place): a create cut off at any point leaves no directory without a record."""
    root.services.mkdir(parents=True, exist_ok=True)
    for stale in root.services.glob(f".creating-{name}-*"):  # the caller holds the lock
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f".creating-{name}-", dir=root.services))
    try:
        staging.chmod(0o755)  # a server running as another user walks through it
        write_json(staging / RECORD, record, mode=0o600)
        os.rename(staging, root.service_dir(name))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    fsync_dir(root.services)
    return load(root, name)


def settle(root: Root, name: str) -> None:
    """Mark a service whose install finished as created (its record drops ``state``)."""
    with service_lock(root, name):
        service = load(root, name)
        service.data.pop("state", None)
        service.save()


def exists(root: Root, name: str) -> bool:
    return (root.service_dir(name) / RECORD).is_file()


def load(root: Root, name: str) -> Service:
    path = root.service_dir(name)
    if not (path / RECORD).is_file():
        raise NotFound(f"service {name!r} does not exist (see: gokku services:list)")
    data = read_json(path / RECORD)
    if not isinstance(data, dict):
        raise GokkuError(f"{path / RECORD} is not a JSON object")
    return Service(name=name, path=path, data=data)


def all_services(root: Root) -> list[Service]:
    if not root.services.is_dir():
        return []
    return [
        load(root, p.name)
        for p in sorted(root.services.iterdir())
        if (p / RECORD).is_file() and not p.name.startswith(".")
    ]


def new_record(name: str, plugin: str, version: str) -> dict[str, Any]:
    return {
        "name": name,
        "plugin": plugin,
        "version": version,
        "container_id": "",
        "running": False,
        "linked_apps": [],
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "state": CREATING,  # until install succeeded: a crash leaves it for the next command
        "config": {},
        "env": {},
        "links": [],
    }


def remove_dir(service: Service) -> None:
    shutil.rmtree(service.path, ignore_errors=True)


def exported_env(service: Service) -> dict[str, str]:
    """The variables a link writes: the plugin's ``env`` map, else Gokku's derivation,
    else none (the link is still recorded, as the original does: a plugin's post-link
    hook may do the wiring itself)."""
    env = {str(k): str(v) for k, v in (service.data.get("env") or {}).items()}
    if env:
        return env
    derive = _GOKKU_DERIVATIONS.get(service.plugin)
    return derive(service) if derive is not None else {}


def _require_config(service: Service, keys: tuple[str, ...]) -> dict[str, str]:
    missing = [key for key in keys if not str(service.config.get(key, ""))]
    if missing:
        raise GokkuError(
            f"service {service.name!r} cannot be linked: its config lacks {', '.join(missing)}"
        )
    return {key: str(service.config[key]) for key in keys}


def _postgres_env(service: Service) -> dict[str, str]:
    c = _require_config(service, ("user", "password", "port", "database"))
    host = str(service.config.get("host") or "localhost")
    return {
        "DATABASE_URL": f"postgres://{c['user']}:{c['password']}@{host}:{c['port']}/{c['database']}",
        "POSTGRES_HOST": host,
        "POSTGRES_PORT": c["port"],
        "POSTGRES_USER": c["user"],
        "POSTGRES_PASSWORD": c["password"],
        "POSTGRES_DB": c["database"],
    }


def _redis_env(service: Service) -> dict[str, str]:
    c = _require_config(service, ("password", "port"))
    host = str(service.config.get("host") or "localhost")
    return {
        "REDIS_URL": f"redis://:{c['password']}@{host}:{c['port']}",
        "REDIS_HOST": host,
        "REDIS_PORT": c["port"],
        "REDIS_PASSWORD": c["password"],
    }


# Services made by Gokku's official postgres/redis plugins carry only a config map.
_GOKKU_DERIVATIONS = {"postgres": _postgres_env, "redis": _redis_env}


def owners(root: Root, app: str, env: str) -> dict[str, str]:
    """Which service's link wrote each linked variable of APP/ENV (key -> service).

    Read once per command: every service record is one file to parse.
    """
    result: dict[str, str] = {}
    for service in all_services(root):
        link = service.link_for(app, env)
        for key in link.get("keys", []) if link else []:
            result.setdefault(key, service.name)
    return result


def link(root: Root, name: str, app: str, env: str) -> list[str]:
    """Write the service's variables into APP/ENV's .env; return the keys written.

    Locks in the global order (app, then service) before anything is read. The service's
    record is written first, marked ``pending``, then the .env, then the mark is cleared:
    a link cut off in between is still recorded with every key it may have written, so
    linking again finishes it and unlinking undoes it.
    """
    check_name("environment", env)
    with apps.app_lock(root, app), service_lock(root, name):
        service = load(root, name)
        apps.require(root, app)
        variables = exported_env(service)
        previous = service.link_for(app, env)
        owned = owners(root, app, env)
        current = apps.read_env(root, app, env)
        for key in variables:
            owner = owned.get(key)
            if owner and owner != name:
                raise GokkuError(
                    f"{key} on app {app!r} belongs to service {owner!r}; unlink it first"
                )
            if not owner and key in current:
                raise GokkuError(
                    f"{key} is already set on app {app!r}; unset it first "
                    f"(gokku config:unset -a {app} {key})"
                )
        stale = set(previous["keys"]) - set(variables) if previous else set()
        if previous:
            service.links.remove(previous)
        record = {"app": app, "env": env, "keys": sorted(set(variables) | stale), "pending": True}
        service.links.append(record)
        service.save()

        def write(values: dict[str, str]) -> None:
            for key in stale:
                values.pop(key, None)
            values.update(variables)

        apps.update_env(root, app, env, write)
        record["keys"] = sorted(variables)
        del record["pending"]
        service.save()
        return sorted(variables)


def unlink(root: Root, name: str, app: str, env: str) -> list[str]:
    """Remove exactly the variables the link wrote (or, for a link that was cut off, may
    have written); return them. The .env goes first, the record after: cut off in
    between, the record is still there to unlink again."""
    with apps.app_lock(root, app), service_lock(root, name):
        service = load(root, name)
        record = service.link_for(app, env)
        if record is None:
            raise GokkuError(f"service {name!r} is not linked to app {app!r} ({env})")
        keys = list(record["keys"])
        if apps.exists(root, app):

            def drop(values: dict[str, str]) -> None:
                for key in keys:
                    values.pop(key, None)

            apps.update_env(root, app, env, drop)
        service.links.remove(record)
        service.save()
        return keys


def links_to(root: Root, app: str) -> list[tuple[str, str]]:
    """(service, env) of every link to APP. Consistent while the app's lock is held:
    links are made and undone under it."""
    return [(s.name, x["env"]) for s in all_services(root) for x in s.links if x["app"] == app]


def update(root: Root, name: str, section: str, values: dict[str, str]) -> None:
    """Merge ``values`` into the record's ``config`` or ``env`` map under the lock."""
    with service_lock(root, name):
        service = load(root, name)
        service.data.setdefault(section, {}).update(values)
        service.save()


def ports_in_use(root: Root) -> set[int]:
    """Ports recorded by any service (``config.port``), so two services never share one."""
    ports = set()
    for service in all_services(root):
        with contextlib.suppress(TypeError, ValueError):
            ports.add(int(service.config.get("port", "")))
    return ports


def hold_port(root: Root, start: int) -> int | None:
    """The first available port at or after ``start``, then held for PORT_HOLD_SECONDS.

    The hold closes the gap between a plugin asking for a port and recording it (after
    starting its server): two services created at once used to be offered the same port,
    and a plugin asking for two ports got the same one twice.
    """
    with lock(root.locks, "ports"):
        held = _held_ports(root)
        taken = ports_in_use(root) | held.keys()
        for port in range(start, MAX_PORT + 1):
            if port not in taken and _listenable(port):
                held[port] = time.time() + PORT_HOLD_SECONDS
                root.services.mkdir(parents=True, exist_ok=True)
                write_json(root.services / HELD_PORTS, {str(p): t for p, t in sorted(held.items())})
                return port
    return None


def port_available(root: Root, port: int) -> bool:
    """Not recorded by a service, not held for one being created, and nothing listens."""
    return port not in ports_in_use(root) | _held_ports(root).keys() and _listenable(port)


def _held_ports(root: Root) -> dict[int, float]:
    """Ports still held (port -> until, epoch seconds); expired holds are dropped."""
    now = time.time()
    return {port: until for port, until in _stored_holds(root).items() if until > now}


def _stored_holds(root: Root) -> dict[int, float]:
    path = root.services / HELD_PORTS
    stored = read_json(path) if path.is_file() else {}
    return {int(port): float(until) for port, until in stored.items()}


def useless_port_holds(root: Root) -> dict[int, str]:
    """Holds kept in the file that hold nothing any more (port -> why): expired ones, and
    those on a port a service now records (the record keeps it; the hold would only
    outlive the service)."""
    recorded = ports_in_use(root)
    now = time.time()
    useless = {}
    for port, until in _stored_holds(root).items():
        if until <= now:
            useless[port] = "expired"
        elif port in recorded:
            useless[port] = "a service records it"
    return useless


def release_port(root: Root, port: object) -> None:
    """Forget the hold on a destroyed service's port: it is free now, not in ten minutes."""
    with contextlib.suppress(TypeError, ValueError), lock(root.locks, "ports"):
        held = _stored_holds(root)
        if held.pop(int(str(port)), None) is not None:
            write_json(root.services / HELD_PORTS, {str(p): t for p, t in sorted(held.items())})


def drop_useless_port_holds(root: Root) -> list[int]:
    """Remove ``useless_port_holds`` from the file; return the ports."""
    with lock(root.locks, "ports"):
        useless = useless_port_holds(root)
        if useless:
            kept = {str(p): t for p, t in sorted(_stored_holds(root).items()) if p not in useless}
            write_json(root.services / HELD_PORTS, kept)
    return sorted(useless)


def _listenable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True
