"""The key registry: which SSH public keys may call Gokku, under which name, with which
role and grants.

``ssh/keys.json`` (mode 0600) is the source of truth; both doors read it. Every change also
rewrites ``ssh/authorized_keys`` for the OpenSSH door, one line per key, each forcing
``gokku ssh-command --fingerprint FP`` with ``restrict,pty`` (no forwarding of any kind, a
terminal only when the client asks). Both files are written atomically under one lock.

A session is bound to the fingerprint that logged in, never to the name: a key removed
and its name given to another key grants the old connection nothing.

A grant belongs to one incarnation of its app or service: ``bound`` records the id of
the one it was given on (``gokku.apps``), and a grant whose id is not that of the app or
service now under the name grants nothing (``live``), whatever a destroy that was cut off
failed to take away. A grant from before ids has none: it holds only on an app or service
from before ids too (the same one: everything made since has an id), never on one made
again under its name.

A registry written before roles existed (no ``version``) keeps every key as ``admin``:
that is what each key could do then. ``upgrade`` writes it in the current form once.

Input is refused rather than repaired: key options (``command=...``), several keys at
once (Dokku added the extra ones without the forced command) and private keys.
"""

import base64
import binascii
import hashlib
import shlex
import time
from pathlib import Path
from typing import NamedTuple

from gokku import apps, keyblob, services
from gokku.errors import GokkuError, NotFound, UsageError
from gokku.names import check_name
from gokku.paths import Root
from gokku.ssh.config import SSHConfig
from gokku.storage import lock, read_json, write_atomic, write_json

KEY_TYPES = tuple(keyblob.TYPES)
LOCK = "ssh-keys"
KEY_OPTIONS = "restrict,pty"
ROLES = ("admin", "member")
VERSION = 2


class Key(NamedTuple):
    """A registered public key and the name it is known by. Its grants are never changed
    in place (a change is a ``_replace`` with new ones): the empty default is shared."""

    name: str
    type: str
    data: str  # base64 blob, as in an authorized_keys line
    fingerprint: str
    comment: str = ""
    added: str = ""
    role: str = "member"
    # "app:api" -> "write", "service:db" -> "read"
    grants: dict[str, str] = {}  # shared: see the docstring
    # "app:api" -> the id of the app it was granted on (none: before ids, apps.LEGACY)
    bound: dict[str, str] = {}  # shared: see the docstring

    @property
    def public_key(self) -> str:
        return f"{self.type} {self.data}"


def registry_path(root: Root) -> Path:
    return root.ssh / "keys.json"


def authorized_keys_path(root: Root) -> Path:
    return root.ssh / "authorized_keys"


def fingerprint(blob: bytes) -> str:
    """OpenSSH's ``SHA256:...`` fingerprint of a key blob."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def parse(text: str) -> tuple[str, str, str]:
    """One public key in OpenSSH format → (type, base64 blob, comment), or UsageError."""
    if "PRIVATE KEY" in text:
        raise UsageError("this is a private key: give the public key (the .pub file)")
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    if not lines:
        raise UsageError("no public key given: pass a PATH or pipe the key on stdin")
    if len(lines) > 1:
        raise UsageError("found more than one line of keys: add one key at a time")
    words = lines[0].split(maxsplit=2)
    if words[0] not in KEY_TYPES:
        if any(word in KEY_TYPES for word in lines[0].split()):
            raise UsageError("the key carries options (like command=...): give the bare key")
        raise UsageError(f"not an SSH public key: the type must be one of {', '.join(KEY_TYPES)}")
    if len(words) < 2:
        raise UsageError("the public key has no key data")
    key_type, data = words[0], words[1]
    comment = words[2] if len(words) > 2 else ""
    _check_blob(key_type, data)
    return key_type, data, comment


def _check_blob(key_type: str, data: str) -> None:
    try:
        blob = base64.b64decode(data, validate=True)
    except binascii.Error:
        raise UsageError("invalid public key: the key data is not base64") from None
    keyblob.check(key_type, blob)


def _read(root: Root) -> tuple[list[Key], bool]:
    """The registered keys, and whether the file predates roles."""
    path = registry_path(root)
    if not path.is_file():
        return [], False
    document = read_json(path)
    entries = document.get("keys", []) if isinstance(document, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise _foreign(path, "not an object with a list of keys")
    legacy = document.get("version") != VERSION
    known = set(Key._fields)
    keys = []
    for entry in entries:
        entry = {k: v for k, v in entry.items() if k in known}
        if legacy:
            entry["role"] = "admin"
        try:
            keys.append(Key(**entry))
        except TypeError:
            raise _foreign(path, "a key lacks its name, type, data or fingerprint") from None
    if not all(_well_formed(key) for key in keys):
        raise _foreign(path, "a key has a field of the wrong type")
    return keys, legacy


def _foreign(path: Path, why: str) -> GokkuError:
    """A registry in no shape we write (a hand edit): every command reading it says so."""
    return GokkuError(f"{path} is not a key registry ({why}): restore it from a backup")


def _well_formed(key: Key) -> bool:
    """Every field as ``_save`` writes it: strings, and grants of strings to strings."""
    strings = (key.name, key.type, key.data, key.fingerprint, key.comment, key.added, key.role)
    return (
        all(isinstance(value, str) for value in strings)
        and isinstance(key.grants, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in key.grants.items())
    )


def load(root: Root) -> list[Key]:
    return _read(root)[0]


def upgrade(root: Root, config: SSHConfig) -> list[Key]:
    """Write a registry from before roles in the current form; return the keys it kept
    as admin (none when there was nothing to do), so that the caller says so once."""
    if not _read(root)[1]:
        return []
    with lock(root.locks, LOCK):
        keys, legacy = _read(root)
        if not legacy:
            return []
        _save(root, config, keys)
    return keys


def by_fingerprint(root: Root, fp: str) -> Key | None:
    """The key that logs in with ``fp``, holding only its live grants."""
    found = next((key for key in load(root) if key.fingerprint == fp), None)
    return None if found is None else live(root, found)


def live(root: Root, key: Key) -> Key:
    """The key with only the grants on the incarnation of each name they were given on."""
    kept = {
        t: a for t, a in key.grants.items() if incarnation(root, t) == key.bound.get(t, apps.LEGACY)
    }
    return key._replace(grants=kept, bound={t: key.bound[t] for t in kept if t in key.bound})


def incarnation(root: Root, target: str) -> str | None:
    """The id of what ``app:NAME``/``service:NAME`` names now; None when nothing does."""
    kind, _, name = target.partition(":")
    try:
        if kind == "app":
            return apps.incarnation(root, check_name("app", name))
        if kind == "service":
            return services.incarnation(root, check_name("service", name))
    except GokkuError:  # a name edited into the registry by hand, an unreadable record
        return None
    return None


def grant(root: Root, config: SSHConfig, name: str, kind: str, target: str, access: str) -> Key:
    """Give key ``name`` ``access`` to the app or service ``target`` as it is now.

    Under the lock of the app or service (the global order: it, then the registry): a
    destroy racing this comes first (refused here: it does not exist) or after (takes the
    grant away); either way the grant is bound to the id it was given on."""
    held = apps.app_lock(root, target) if kind == "app" else services.service_lock(root, target)
    with held:
        current = incarnation(root, f"{kind}:{target}")
        if current is None:
            raise NotFound(f"{kind} {target!r} does not exist")
        return set_grant(root, config, name, f"{kind}:{target}", access, current)


# What ``add`` did.
ADDED = "added"
PRESENT = "present"  # exactly this key under this name was there: nothing to do
REPAIRED = "repaired"  # it was there, authorized_keys was not: the file was rewritten


def add(
    root: Root, config: SSHConfig, name: str, text: str, role: str = "member"
) -> tuple[Key, str]:
    """Register ``text`` under ``name``; say whether it was ADDED, PRESENT or REPAIRED.

    Adding the same key again is how an admin retries an add that was killed between
    writing the registry and authorized_keys: it finishes the job."""
    check_name("key", name)
    if role not in ROLES:
        raise UsageError(f"unknown role {role!r}: use {' or '.join(ROLES)}")
    key_type, data, comment = parse(text)
    fp = fingerprint(base64.b64decode(data))
    with lock(root.locks, LOCK):
        keys = load(root)
        for key in keys:
            if key.fingerprint == fp and key.name == name:
                return key, REPAIRED if _sync(root, config, keys) else PRESENT
            if key.fingerprint == fp:
                raise GokkuError(f"key {fp} is already registered as {key.name!r}")
            if key.name == name:
                raise GokkuError(
                    f"a key named {name!r} is already registered ({key.fingerprint}); "
                    f"remove it first (gokku ssh-keys:remove {name})"
                )
        added = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        new = Key(name, key_type, data, fp, comment, added, role)
        _save(root, config, [*keys, new])
    return new, ADDED


def remove(root: Root, config: SSHConfig, name: str | None, fp: str | None) -> Key:
    """Remove the key called ``name``, or the one with fingerprint ``fp``."""
    if fp and not fp.startswith("SHA256:"):
        fp = "SHA256:" + fp
    with lock(root.locks, LOCK):
        keys = load(root)
        match = next((k for k in keys if k.name == name or k.fingerprint == fp), None)
        if match is None:
            what = f"named {name!r}" if name else f"with fingerprint {fp}"
            raise NotFound(f"no key {what} is registered (see: gokku ssh-keys:list)")
        _save(root, config, [k for k in keys if k is not match])
    return match


def set_grant(
    root: Root,
    config: SSHConfig,
    name: str,
    target: str,
    access: str | None,
    bound: str = apps.LEGACY,
) -> Key:
    """Give key ``name`` ``access`` to ``target`` (``app:api``) as incarnation ``bound``
    (``grant`` says which), or take it away (None)."""
    with lock(root.locks, LOCK):
        keys = load(root)
        match = next((k for k in keys if k.name == name), None)
        if match is None:
            raise NotFound(f"no key named {name!r} is registered (see: gokku ssh-keys:list)")
        grants = {k: v for k, v in match.grants.items() if k != target}
        ids = {k: v for k, v in match.bound.items() if k != target}
        if access is not None:
            grants[target] = access
            if bound != apps.LEGACY:
                ids[target] = bound
        elif target not in match.grants:
            raise NotFound(f"key {name!r} has no access to {target}")
        updated = match._replace(grants=grants, bound=ids)
        _save(root, config, [updated if k is match else k for k in keys])
    return updated


def drop_grants(root: Root, config: SSHConfig, target: str) -> bool:
    """Forget every grant on ``target`` (they are bound to an incarnation that is gone:
    this keeps the registry tidy); True when there were some."""
    with lock(root.locks, LOCK):
        keys = load(root)
        if any(target in k.grants for k in keys):
            kept = [
                k._replace(
                    grants={t: a for t, a in k.grants.items() if t != target},
                    bound={t: i for t, i in k.bound.items() if t != target},
                )
                for k in keys
            ]
            _save(root, config, kept)
            return True
    return False


def _save(root: Root, config: SSHConfig, keys: list[Key]) -> None:
    """Write the registry, then the OpenSSH door's file derived from it."""
    root.ssh.mkdir(parents=True, exist_ok=True)
    root.ssh.chmod(0o700)
    document = {"version": VERSION, "keys": [key._asdict() for key in keys]}
    write_json(registry_path(root), document, mode=0o600)
    write_atomic(authorized_keys_path(root), authorized_keys_text(root, config, keys), 0o600)


def authorized_keys_text(root: Root, config: SSHConfig, keys: list[Key]) -> bytes:
    """The OpenSSH door's file as the registry says it must be."""
    return "".join(authorized_keys_line(root, config, key) + "\n" for key in keys).encode()


def authorized_keys_in_step(root: Root, config: SSHConfig) -> bool:
    """Whether authorized_keys is what the registry makes of it (a run killed between the
    two writes leaves it behind; ``doctor`` asks)."""
    return _in_step(root, config, load(root))


def _in_step(root: Root, config: SSHConfig, keys: list[Key]) -> bool:
    try:
        current = authorized_keys_path(root).read_bytes()
    except FileNotFoundError:
        current = None
    return current == authorized_keys_text(root, config, keys) or (current is None and not keys)


def sync_authorized_keys(root: Root, config: SSHConfig) -> bool:
    """Rewrite authorized_keys from the registry when it is out of step; True if it was."""
    with lock(root.locks, LOCK):
        return _sync(root, config, load(root))


def _sync(root: Root, config: SSHConfig, keys: list[Key]) -> bool:
    """The caller holds the registry's lock."""
    if _in_step(root, config, keys):
        return False
    write_atomic(authorized_keys_path(root), authorized_keys_text(root, config, keys), 0o600)
    return True


def authorized_keys_line(root: Root, config: SSHConfig, key: Key) -> str:
    """``command="... ssh-command --fingerprint FP",restrict,pty TYPE DATA NAME``.

    Inside the quoted option sshd turns ``\\"`` into ``"`` and keeps every other byte; the
    command itself is run by the login shell, so every word is shell-quoted.
    """
    argv = [
        *config.gokku_argv(),
        "ssh-command",
        "--root",
        str(root.path),
        "--fingerprint",
        key.fingerprint,
    ]
    command = shlex.join(argv).replace('"', '\\"')
    return f'command="{command}",{KEY_OPTIONS} {key.public_key} {key.name}'
