"""Services (``services/SVC/config.json``) and their links to apps.

The record keeps Gokku's fields (name, plugin, container_id, running, linked_apps,
created_at, config) and adds ``env`` (the variables the service gives to linked apps, set
by its plugin through the ``set_service_env`` helper) and ``links`` (which variables each
link wrote where, so unlink removes exactly those and a link can tell who owns a key; with
the ``alias`` it was made under, and ``promoted`` when ``promote`` made it the primary one),
and ``id``, the incarnation grants are bound to (``gokku.apps``: a record from before ids
has none). A record ``creating`` is a create still running or cut off: it is not linked.
"""

import contextlib
import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from gokku import access, apps
from gokku.errors import GokkuError, NotFound
from gokku.names import check_name, is_alias, is_name, new_id
from gokku.paths import Root
from gokku.storage import fsync_dir, lock, read_json, remove_tree, temp_dir, write_json

RECORD = "config.json"
CREATING = "creating"
HELD_PORTS = ".held-ports.json"  # port -> until (epoch seconds)
PORT_HOLD_SECONDS = 600
MAX_PORT = 65535
# gokku.yml: the ports services are handed, LOW-HIGH (default: any port from the plugin's
# first one up). Two state roots on one host (staging and production) each get a range
# of their own, so one root's new service never takes the port of the other's stopped one.
PORTS_SETTING = "service_ports"


class Service(NamedTuple):
    """A service as its directory and its record (``config.json``) say."""

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
    """The service's lock; held only by a command whose access holds on the service
    under the name now (``access.hold_decision``)."""
    with lock(root.locks, f"service-{check_name('service', name)}"):
        access.hold_decision("service", name, lambda: incarnation(root, name))
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
        remove_tree(stale)
    staging = temp_dir(root.services, f".creating-{name}-")
    try:
        staging.chmod(0o755)  # a server running as another user walks through it
        write_json(staging / RECORD, record, mode=0o600)
        os.rename(staging, root.service_dir(name))
    except BaseException:
        remove_tree(staging)
        raise
    fsync_dir(root.services)
    return load(root, name)


def settle(root: Root, name: str) -> None:
    """Mark a service whose install finished as created (its record drops ``state``); the
    holds its install took are consumed (the record keeps its port taken now)."""
    with service_lock(root, name):
        service = load(root, name)
        service.data.pop("state", None)
        service.save()
    with contextlib.suppress(GokkuError):  # housekeeping: never fails a create that worked
        drop_useless_port_holds(root)


def exists(root: Root, name: str) -> bool:
    return (root.service_dir(name) / RECORD).is_file()


def incarnation(root: Root, name: str) -> str | None:
    """The id of the service now under this name (None: there is none; ``apps.LEGACY``:
    made before ids existed)."""
    try:
        return str(load(root, name).data.get("id") or apps.LEGACY)
    except NotFound:
        return None


def load(root: Root, name: str, plugin: str = "") -> Service:
    """The service ``name``; NotFound when there is none (its hint among ``plugin``'s
    services when given)."""
    path = root.service_dir(name)
    if not (path / RECORD).is_file():
        raise NotFound(
            f"service {name!r} does not exist (see: gokku services:list)", "service", name, plugin
        )
    data = read_json(path / RECORD)
    problem = _record_problem(data)
    if problem:
        raise GokkuError(f"{path / RECORD} is not a service record ({problem}): restore it")
    return Service(name=name, path=path, data=data)


def _record_problem(data: Any) -> str:
    """What makes ``data`` unusable as a record (read by every command that looks at the
    service): a hand edit or a foreign file fails with one line, not deep in a command."""
    if not isinstance(data, dict):
        return "not a JSON object"
    for section in ("config", "env"):
        if not isinstance(data.get(section, {}), dict):
            return f"{section} is not an object"
    links = data.get("links", [])
    shape = {"app": str, "env": str, "keys": list}
    if not isinstance(links, list) or not all(
        isinstance(x, dict) and all(isinstance(x.get(k), t) for k, t in shape.items())
        for x in links
    ):
        return "links is not a list of {app, env, keys}"
    return ""


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
        "id": new_id(),
        "state": CREATING,  # until install succeeded: a crash leaves it for the next command
        "config": {},
        "env": {},
        "links": [],
    }


def remove_dir(root: Root, service: Service) -> None:
    """Rename the directory to a tombstone (one step: the service is gone), then delete
    it with any a destroy cut off left; the rerun or ``doctor`` finishes one cut off."""
    if service.path.is_dir():
        tomb = temp_dir(root.services, f".destroyed-{service.name}.")
        os.rename(service.path, tomb / "service")
        fsync_dir(root.services)
    clear_leftovers(root, service.name)


def tombstones(root: Root, name: str = "*") -> list[Path]:
    """What deletions of services that were cut off left (``remove_dir``); of NAME only
    when given (names hold no dot: ".destroyed-a." is never service a-b's)."""
    found = root.services.glob(f".destroyed-{name}.*") if root.services.is_dir() else []
    return sorted(found)


def clear_leftovers(root: Root, name: str) -> list[str]:
    """Delete the tombstones of NAME; the caller holds its lock. Returns what it removed."""
    removed = []
    for path in tombstones(root, name):
        remove_tree(path)
        removed.append(f"services/{path.name}")
    return removed


def leftover_destroys(root: Root) -> list[tuple[str, Callable[[], str]]]:
    """Tombstones of destroys that were cut off (message, repair), for ``gokku doctor``."""
    names = sorted({p.name.removeprefix(".destroyed-").split(".")[0] for p in tombstones(root)})
    return [
        (
            f"services/.destroyed-{name}.*: left by a destroy of service {name} that was cut off",
            lambda name=name: _clear_locked(root, name),
        )
        for name in names
    ]


def _clear_locked(root: Root, name: str) -> str:
    with service_lock(root, check_name("service", name)):
        return f"removed {', '.join(clear_leftovers(root, name)) or 'nothing (already done)'}"


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


def aliased(variables: dict[str, str], alias: str) -> dict[str, str]:
    """The variables under ALIAS, Dokku's ``--alias``: a name's first word is replaced
    by the alias (``DATABASE_URL`` -> ``REPORTS_URL``, ``POSTGRES_HOST`` ->
    ``REPORTS_HOST``; a name without ``_`` is prefixed: ``PORT`` -> ``REPORTS_PORT``),
    so everything about that service on the app starts with the alias."""
    result: dict[str, str] = {}
    for key, value in variables.items():
        new = f"{alias}_{key.partition('_')[2] or key}"
        if new in result:
            raise GokkuError(
                f"alias {alias} would write two of the service's variables as {new}: "
                "link it without an alias"
            )
        result[new] = value
    return result


def link_variables(service: Service, alias: str | None, primary: bool) -> dict[str, str]:
    """What a link writes: the service's variables under their own names when it is the
    app's primary one of them, under ALIAS when it has one (a promoted link: both)."""
    variables = exported_env(service)
    result = aliased(variables, alias) if alias else {}
    return {**result, **variables} if primary else result


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


def _check_free(root: Root, app: str, env: str, keys: Iterable[str], ours: set[str]) -> None:
    """Refuse unless each variable is unset, or written by a link of one of the services
    ``ours`` (those whose links are being rewritten). Called under the app's lock."""
    owned = owners(root, app, env)
    current = apps.read_env(root, app, env)
    for key in keys:
        owner = owned.get(key)
        if owner and owner not in ours:
            raise GokkuError(f"{key} on app {app!r} belongs to service {owner!r}; unlink it first")
        if not owner and key in current:
            raise GokkuError(
                f"{key} is already set on app {app!r}; unset it first "
                f"(gokku config:unset -a {app} {key})"
            )


def _begin(service: Service, app: str, env: str, variables: dict[str, str], **how: Any) -> set[str]:
    """Record the link of SERVICE to APP/ENV as it is to be (``how``: alias, promoted),
    ``pending`` with every key it may write or leave, before the .env is touched: a
    change cut off in between is still recorded, so doing it again finishes it and
    unlinking undoes it. Returns the keys the link had and no longer writes."""
    previous = service.link_for(app, env)
    stale = set(previous["keys"]) - set(variables) if previous else set()
    if previous:
        service.links.remove(previous)
    record = {"app": app, "env": env, "keys": sorted(set(variables) | stale)}
    record.update({k: v for k, v in how.items() if v})
    service.links.append({**record, "pending": True})
    service.save()
    return stale


def _finish(service: Service, app: str, env: str, variables: dict[str, str]) -> None:
    """The .env is written: the link records exactly its keys, and is no longer pending."""
    record = service.link_for(app, env)
    record["keys"] = sorted(variables)
    del record["pending"]
    service.save()


def _write(root: Root, app: str, env: str, drop: set[str], values: dict[str, str]) -> None:
    """Drop DROP from APP/ENV's .env and set VALUES, in one locked write."""

    def change(current: dict[str, str]) -> None:
        for key in drop:
            current.pop(key, None)
        current.update(values)

    apps.update_env(root, app, env, change)


def link(root: Root, name: str, app: str, env: str, alias: str | None = None) -> list[str]:
    """Write the service's variables into APP/ENV's .env, under ALIAS when given (the
    app's primary link otherwise); return the keys written.

    Locks in the global order (app, then service) before anything is read; the link is
    recorded (``_begin``) before the .env is written.
    """
    check_name("environment", env)
    with apps.app_lock(root, app), service_lock(root, name):
        service = load(root, name)
        apps.require(root, app)
        if service.data.get("state") == CREATING:
            raise GokkuError(
                f"service {name!r} is being created, or its create was cut off (create it "
                "again or destroy it): it cannot be linked yet"
            )
        _check_same_alias(service, app, env, alias)
        variables = link_variables(service, alias, primary=alias is None)
        _check_free(root, app, env, variables, {name})
        stale = _begin(service, app, env, variables, alias=alias)
        _write(root, app, env, stale, variables)
        _finish(service, app, env, variables)
        return sorted(variables)


def _check_same_alias(service: Service, app: str, env: str, alias: str | None) -> None:
    """Linking again refreshes a link as it was made; under another alias (or none) it
    would drop the variables the app reads now, so it is refused, saying how to move."""
    previous = service.link_for(app, env)
    if previous is None or previous.get("alias") == alias:
        return
    where = "" if env == apps.DEFAULT_ENV else f" --env {env}"

    def shown(name: str | None) -> str:
        return name or "its primary service"

    raise GokkuError(
        f"{service.name} is linked to {app} as {shown(previous.get('alias'))}; unlink it "
        f"first to link it as {shown(alias)} (gokku services:unlink {service.name} -a {app}"
        f"{where})"
    )


class Promotion(NamedTuple):
    """What ``promote`` did: the keys the promoted link writes now, and the alias each
    former primary service's variables are kept under."""

    keys: list[str]
    kept: dict[str, str]


def promote(root: Root, name: str, app: str, env: str) -> Promotion:
    """Make the service linked to APP/ENV under an alias the primary one, as Dokku's
    ``postgres:promote``: its variables are also written under their own names
    (``DATABASE_URL``...), and each service whose link wrote those names keeps its
    variables under its own alias only (its service name in capitals when it had none).

    Locks the app, then (under it no link to the app can change) every service
    concerned, in name order; all their links are recorded before the .env is written.
    """
    check_name("environment", env)
    with apps.app_lock(root, app), contextlib.ExitStack() as stack:
        apps.require(root, app)
        service = load(root, name)
        link = _aliased_link(service, app, env)
        names = {name, *_writers(root, app, env, set(exported_env(service)))}
        for each in sorted(names):
            stack.enter_context(service_lock(root, each))
        promoted = load(root, name)
        demoted = [load(root, each) for each in sorted(names - {name})]
        plans = [(s, _kept_alias(s, app, env), False) for s in demoted]
        plans.append((promoted, link["alias"], True))
        writes = [(s, link_variables(s, alias, primary=primary)) for s, alias, primary in plans]
        _check_free(root, app, env, _claims(writes), names)
        stale: set[str] = set()
        for (service, alias, primary), (_, variables) in zip(plans, writes, strict=True):
            stale |= _begin(service, app, env, variables, alias=alias, promoted=primary)
        _write(root, app, env, stale, {k: v for _, vs in writes for k, v in vs.items()})
        for service, variables in writes:
            _finish(service, app, env, variables)
        kept = {s.name: alias for s, alias, _ in plans[:-1]}
        return Promotion(sorted(writes[-1][1]), kept)


def _writers(root: Root, app: str, env: str, keys: set[str]) -> list[str]:
    """The services whose links to APP/ENV write (or, cut off, may write) any of KEYS."""
    return [
        s.name
        for s in all_services(root)
        if (link := s.link_for(app, env)) is not None and keys & set(link["keys"])
    ]


def _aliased_link(service: Service, app: str, env: str) -> dict[str, Any]:
    """The service's link to APP/ENV, which must have an alias and not be promoted (but
    a promotion that was cut off may be done again)."""
    link = service.link_for(app, env)
    if link is None:
        raise GokkuError(f"service {service.name!r} is not linked to app {app!r} ({env})")
    if not link.get("alias"):
        raise GokkuError(
            f"service {service.name!r} is linked to app {app!r} without an alias: "
            "it is the primary one already"
        )
    if link.get("promoted") and not link.get("pending"):
        raise GokkuError(f"service {service.name!r} is promoted on app {app!r} already")
    return link


def _kept_alias(service: Service, app: str, env: str) -> str:
    """The alias a demoted service keeps its variables under: its link's, else its name
    in capitals (``main-db`` -> ``MAIN_DB``)."""
    alias = service.link_for(app, env).get("alias")
    if alias:
        return alias
    derived = service.name.upper().replace("-", "_")
    if not is_alias(derived):
        raise GokkuError(
            f"service {service.name!r} has no alias to keep its variables under on app "
            f"{app!r}: link it again with --alias NAME first"
        )
    return derived


def _claims(writes: list[tuple[Service, dict[str, str]]]) -> dict[str, str]:
    """key -> the service that is to write it; two services may not claim one key."""
    claims: dict[str, str] = {}
    for service, variables in writes:
        for key in variables:
            if claims.setdefault(key, service.name) != service.name:
                raise GokkuError(
                    f"{key} would be written by both {claims[key]!r} and {service.name!r}: "
                    f"link {claims[key]!r} again with another --alias first"
                )
    return claims


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
            _write(root, app, env, set(keys), {})
        service.links.remove(record)
        service.save()
        return keys


def links_to(root: Root, app: str) -> list[tuple[str, str]]:
    """(service, env) of every link to APP. Consistent while the app's lock is held:
    links are made and undone under it."""
    return [(s.name, x["env"]) for s in all_services(root) for x in s.links if x["app"] == app]


def finish_link(root: Root, name: str, app: str, env: str) -> list[str]:
    """Write the link of NAME to APP/ENV again as it is recorded (alias, promoted), with the
    values the service gives now: what finishes a link that was cut off halfway, or puts
    back its variables when they went missing from the .env. A key the link wrote before
    and no longer writes is dropped, unless another service's link records it (a
    promotion cut off leaves both). Returns the keys written."""
    with apps.app_lock(root, app), service_lock(root, name):
        service = load(root, name)
        apps.require(root, app)
        record = service.link_for(app, env)
        if record is None:
            raise GokkuError(f"service {name!r} is not linked to app {app!r} ({env})")
        alias = record.get("alias")
        variables = link_variables(
            service, alias, primary=not alias or bool(record.get("promoted"))
        )
        others = {
            key
            for other in all_services(root)
            if other.name != name
            for key in (other.link_for(app, env) or {}).get("keys", [])
        }
        _check_free(root, app, env, set(variables) - set(record["keys"]), {name})
        _write(root, app, env, set(record["keys"]) - set(variables) - others, variables)
        record["keys"] = sorted(variables)
        record.pop("pending", None)
        service.save()
        return sorted(variables)


def is_original(service: Service) -> bool:
    """A record written by the original Gokku: ``linked_apps`` and no ``links``. Saved as
    it is, its links would be lost (``save`` derives ``linked_apps`` from ``links``)."""
    return "links" not in service.data


def migrate(root: Root, name: str) -> list[str]:
    """Write an original Gokku record in the current form; return the apps its links were
    recorded for. The original linked on the app's shared environment with the variables
    Gokku derives for postgres and redis (none for other plugins): each linked app that
    exists gets a link recording those of them its .env holds, so unlink removes them."""
    linked = load(root, name).data.get("linked_apps")
    wanted = (
        sorted({a for a in linked if isinstance(a, str) and is_name(a)})
        if isinstance(linked, list)
        else []
    )
    with contextlib.ExitStack() as stack:
        for app in wanted:
            stack.enter_context(apps.app_lock(root, app))
        stack.enter_context(service_lock(root, name))
        service = load(root, name)
        if not is_original(service):
            return []
        try:
            variables = exported_env(service)
        except GokkuError:  # a config the original could not have linked either
            variables = {}
        links = []
        for app in (a for a in wanted if apps.exists(root, a)):
            present = apps.read_env(root, app, apps.DEFAULT_ENV)
            keys = sorted(key for key in variables if key in present)
            links.append({"app": app, "env": apps.DEFAULT_ENV, "keys": keys})
        service.data["links"] = links
        service.data.setdefault("env", {})
        service.save()
        return [x["app"] for x in links]


def update(root: Root, name: str, section: str, values: dict[str, str]) -> list[str]:
    """Merge ``values`` into the record's ``config`` or ``env`` map under the lock. New
    variables (``env``) reach the apps linked already: each link is written again with
    them (``finish_link``), so a plugin that changes a password changes it everywhere.
    Cut off before every link is written, setting the same values again finishes it.
    Returns the apps whose links were written."""
    with service_lock(root, name):
        service = load(root, name)
        service.data.setdefault(section, {}).update(values)
        service.save()
    if section != "env":
        return []
    written = []
    for record in list(service.links):
        with contextlib.suppress(NotFound):  # an app gone: doctor forgets the link
            finish_link(root, name, record["app"], record["env"])
            written.append(record["app"])
    return written


def ports_in_use(root: Root) -> set[int]:
    """Ports recorded by any service (``config.port``), so two services never share one."""
    ports = set()
    for service in all_services(root):
        with contextlib.suppress(TypeError, ValueError):
            ports.add(int(service.config.get("port", "")))
    return ports


def hold_port(root: Root, start: int) -> int:
    """The first available port at or after ``start`` (within ``service_ports``), then held
    for PORT_HOLD_SECONDS.

    The hold closes the gap between a plugin asking for a port and recording it (after
    starting its server): two services created at once used to be offered the same port,
    and a plugin asking for two ports got the same one twice. The end of the create
    (``settle``) consumes it; one a create did not consume lapses, and is dropped at the
    next write of the file.
    """
    low, high = service_ports(root)
    if not low <= start <= high:
        start = low
    with lock(root.locks, "ports"):
        held = _held_ports(root)
        taken = ports_in_use(root) | held.keys()
        for port in range(start, high + 1):
            if port not in taken and _listenable(port):
                held[port] = time.time() + PORT_HOLD_SECONDS
                root.services.mkdir(parents=True, exist_ok=True)
                _write_holds(root, held)
                return port
    raise GokkuError(f"no free port from {start} to {high} (gokku.yml: {PORTS_SETTING})")


def service_ports(root: Root) -> tuple[int, int]:
    """The range gokku.yml's ``service_ports: LOW-HIGH`` gives services (1-65535 if unset).

    A plugin's first port outside the range starts at LOW instead."""
    from gokku.ssh.config import CONFIG_FILE, read_settings

    value = read_settings(root).get(PORTS_SETTING)
    if value is None:
        return 1, MAX_PORT
    low, _, high = str(value).partition("-")
    if low.isdigit() and high.isdigit() and 1 <= int(low) <= int(high) <= MAX_PORT:
        return int(low), int(high)
    raise GokkuError(
        f"{root.path / CONFIG_FILE}: {PORTS_SETTING} must be LOW-HIGH, ports from 1 to "
        f"{MAX_PORT} (as 20000-20999), not {value!r}"
    )


def port_available(root: Root, port: int) -> bool:
    """Not recorded by a service, not held for one being created, and nothing listens."""
    return port not in ports_in_use(root) | _held_ports(root).keys() and _listenable(port)


def _held_ports(root: Root) -> dict[int, float]:
    """Ports still held (port -> until, epoch seconds); expired holds are dropped."""
    now = time.time()
    return {port: until for port, until in stored_port_holds(root).items() if until > now}


def stored_port_holds(root: Root) -> dict[int, float]:
    """Every hold in the file, lapsed or not (``doctor`` reads it to check it)."""
    path = root.services / HELD_PORTS
    stored = read_json(path) if path.is_file() else {}
    try:
        return {int(port): float(until) for port, until in stored.items()}
    except (AttributeError, TypeError, ValueError):
        raise GokkuError(
            f"{path} is not a record of port holds (port: until): remove it "
            "(holds are taken again at the next services:create)"
        ) from None


def _write_holds(root: Root, held: dict[int, float]) -> None:
    write_json(root.services / HELD_PORTS, {str(p): t for p, t in sorted(held.items())})


def release_port(root: Root, port: object) -> None:
    """Forget the hold on a destroyed service's port: it is free now, not in ten minutes."""
    with contextlib.suppress(TypeError, ValueError), lock(root.locks, "ports"):
        held = stored_port_holds(root)
        if held.pop(int(str(port)), None) is not None:
            _write_holds(root, held)


def drop_useless_port_holds(root: Root) -> None:
    """Drop the holds that hold nothing any more: lapsed ones, and those on a port a
    service records (the record keeps it taken; the hold would only outlive the service)."""
    with lock(root.locks, "ports"):
        stored = stored_port_holds(root)
        recorded = ports_in_use(root)
        kept = {p: t for p, t in _held_ports(root).items() if p not in recorded}
        if kept != stored:
            _write_holds(root, kept)


def _listenable(port: int) -> bool:
    import socket  # here: only a create picks a port

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True
