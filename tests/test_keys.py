"""``ssh-keys:*``: the registry, its refusals, and the authorized_keys file it writes."""

import base64
import json
import struct
import subprocess
import threading
from pathlib import Path

import asyncssh
import pytest
from sshkit import *  # noqa: F403 - fixtures
from sshkit import KeyPair, make_key

from gokku import keyblob
from gokku.errors import UsageError


@pytest.fixture
def bob(keydir: Path) -> KeyPair:
    return make_key(keydir, "bob")


def _string(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


def _security_key(blob: bytes, key_type: bytes) -> bytes:
    """The blob of a FIDO key holding the same key as ``blob`` (ssh-keygen needs the
    device to make one): its fields with the ``sk-`` type and an application after them."""
    (length,) = struct.unpack(">I", blob[:4])
    return _string(key_type) + blob[4 + length :] + _string(b"ssh:")


@pytest.fixture(scope="module")
def every_key_type(tmp_path_factory) -> dict[str, bytes]:
    """A real key of each type Gokku accepts: ssh-keygen's, and FIDO ones built from them."""
    folder = tmp_path_factory.mktemp("keys")
    blobs = {}
    for key_type, args in [
        ("ssh-rsa", ["-t", "rsa", "-b", "1024"]),
        ("ecdsa-sha2-nistp256", ["-t", "ecdsa", "-b", "256"]),
        ("ecdsa-sha2-nistp384", ["-t", "ecdsa", "-b", "384"]),
        ("ecdsa-sha2-nistp521", ["-t", "ecdsa", "-b", "521"]),
        ("ssh-ed25519", ["-t", "ed25519"]),
    ]:
        path = folder / key_type
        subprocess.run(["ssh-keygen", "-q", "-N", "", *args, "-f", path], check=True)
        blobs[key_type] = base64.b64decode(path.with_suffix(".pub").read_text().split()[1])
    for fido, plain in [
        ("sk-ssh-ed25519@openssh.com", "ssh-ed25519"),
        ("sk-ecdsa-sha2-nistp256@openssh.com", "ecdsa-sha2-nistp256"),
    ]:
        blobs[fido] = _security_key(blobs[plain], fido.encode())
    assert sorted(blobs) == sorted(keyblob.TYPES)
    return blobs


def _fields(blob: bytes) -> list[bytes]:
    fields = []
    while blob:
        (length,) = struct.unpack(">I", blob[:4])
        fields.append(blob[4 : 4 + length])
        blob = blob[4 + length :]
    return fields


def _damaged(blob: bytes) -> list[bytes]:
    """Every way a blob gets cut short, a byte too many, one bit flipped anywhere, and
    each field one byte shorter (framed anew: an Ed25519 key of 31 bytes); for a P-521
    key, a point whose coordinate is one curve prime above its own (it fits the field)."""
    flipped = [
        blob[:i] + bytes([blob[i] ^ bit]) + blob[i + 1 :]
        for i in range(len(blob))
        for bit in (0x01, 0x80)
    ]
    fields = _fields(blob)
    shorter = [
        b"".join(_string(f[:-1] if i == n else f) for i, f in enumerate(fields))
        for n in range(len(fields))
    ]
    wrapped = []
    if fields[:2] == [b"ecdsa-sha2-nistp521", b"nistp521"]:
        prime, size = 2**521 - 1, 66
        x, y = (int.from_bytes(c, "big") for c in (fields[2][1 : 1 + size], fields[2][1 + size :]))
        for point in [(x + prime, y), (x, y + prime)]:
            encoded = b"\x04" + b"".join(c.to_bytes(size, "big") for c in point)
            wrapped.append(b"".join(map(_string, [*fields[:2], encoded])))
    return [blob[:i] for i in range(len(blob))] + [blob + b"\0"] + flipped + shorter + wrapped


def test_key_checks_agree_with_asyncssh_on_every_type_and_every_damage(every_key_type) -> None:
    """``ssh-keys:add`` checks a key without asyncssh (its import alone costs 150 ms); the
    embedded door reads keys with asyncssh: a key one accepts the other must read, and a
    key it refuses must be one asyncssh refuses too (cut short, bytes after the last
    field, an even RSA exponent, a point off its curve)."""

    def gokku_reads(key_type: str, blob: bytes) -> bool:
        try:
            keyblob.check(key_type, blob)
        except UsageError:
            return False
        return True

    def asyncssh_reads(key_type: str, blob: bytes) -> bool:
        try:
            key = asyncssh.import_public_key(b"%s %s" % (key_type.encode(), base64.b64encode(blob)))
        except Exception:
            return False
        return key.algorithm.decode() == key_type

    compared = refused = 0
    for key_type, blob in every_key_type.items():
        assert gokku_reads(key_type, blob) and asyncssh_reads(key_type, blob), key_type
        for damaged in _damaged(blob):
            verdict = asyncssh_reads(key_type, damaged)
            assert gokku_reads(key_type, damaged) == verdict, (key_type, damaged.hex())
            compared += 1
            refused += not verdict
    # Most damage is refused, and some is not (a flipped bit of an RSA modulus or an
    # Ed25519 key is another key): both kinds were compared.
    assert compared > 2000 and compared - refused > 300 and refused > 1500, (compared, refused)


def _fingerprint(key: KeyPair) -> str:
    out = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(key.path) + ".pub"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.split()[1]


def test_add_from_path_and_stdin_then_list(gokku, alice: KeyPair, bob: KeyPair) -> None:
    gokku.ok("ssh-keys:add", "bob", input=bob.public.encode())
    listed = json.loads(gokku.ok("ssh-keys:list", "--format", "json").stdout)
    assert [(k["name"], k["type"], k["fingerprint"]) for k in listed] == [
        ("alice", "ssh-ed25519", _fingerprint(alice)),
        ("bob", "ssh-ed25519", _fingerprint(bob)),
    ]
    assert all(k["added"].endswith("Z") for k in listed)
    text = gokku.ok("ssh-keys:list").stdout
    assert text.splitlines()[0].split() == [
        "NAME",
        "ROLE",
        "TYPE",
        "FINGERPRINT",
        "GRANTS",
        "ADDED",
    ]
    assert _fingerprint(bob) in text


def test_authorized_keys_lines_force_the_command(gokku, alice: KeyPair) -> None:
    path = gokku.root / "ssh" / "authorized_keys"
    (line,) = path.read_text().splitlines()
    options, key_type, data, comment = line.rsplit(" ", 3)
    assert options.startswith('command="') and options.endswith('",restrict,pty')
    listed = json.loads(gokku.ok("ssh-keys:list", "--format", "json").stdout)
    expected = f"ssh-command --root {gokku.root} --fingerprint {listed[0]['fingerprint']}"
    assert options.endswith(expected + '",restrict,pty')
    assert f"{key_type} {data} " in alice.public and comment == "alice"
    assert path.stat().st_mode & 0o777 == 0o600


def test_same_key_same_name_is_a_no_op(gokku, alice: KeyPair) -> None:
    before = gokku.snapshot()
    result = gokku.ok("ssh-keys:add", "alice", str(alice.path) + ".pub")
    assert "already registered" in result.stderr
    assert gokku.snapshot() == before


def _with_blob(key: KeyPair, change) -> str:
    key_type, data = key.public.split()[:2]
    return f"{key_type} {base64.b64encode(change(base64.b64decode(data))).decode()}"


def _off_curve() -> str:
    """An ECDSA key whose point (1, 1) is not on P-256."""
    point = b"\x04" + (1).to_bytes(32, "big") * 2
    blob = _string(b"ecdsa-sha2-nistp256") + _string(b"nistp256") + _string(point)
    return f"ecdsa-sha2-nistp256 {base64.b64encode(blob).decode()}"


@pytest.mark.parametrize(
    "make_input,message",
    [
        (lambda a, b: 'command="sh" ' + b.public, "carries options"),
        (lambda a, b: 'no-pty,from="*" ' + b.public, "carries options"),
        (lambda a, b: b.public + b.public, "one key at a time"),
        (lambda a, b: b.path.read_text(), "private key"),
        (lambda a, b: "ssh-ed25519 AAAA!!!!", "not base64"),
        (lambda a, b: "ssh-ed25519 " + b.public.split()[1][:-8], "invalid public key"),
        (lambda a, b: "ssh-rsa " + b.public.split()[1], "not a ssh-rsa key"),
        (lambda a, b: _with_blob(b, lambda blob: blob + b"\0"), "bytes after its last field"),
        (lambda a, b: _with_blob(b, lambda blob: blob[:-1]), "ends before its last field"),
        (lambda a, b: _off_curve(), "not on its curve"),
        (lambda a, b: "hello world", "not an SSH public key"),
        (lambda a, b: "", "no public key given"),
        (lambda a, b: a.public, "already registered as 'alice'"),
    ],
)
def test_bad_keys_are_refused(gokku, alice: KeyPair, bob: KeyPair, make_input, message) -> None:
    before = gokku.snapshot()
    result = gokku("ssh-keys:add", "carol", input=make_input(alice, bob).encode())
    assert result.code != 0
    assert message in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert gokku.snapshot() == before


def test_name_taken_by_another_key_and_bad_names(gokku, alice: KeyPair, bob: KeyPair) -> None:
    before = gokku.snapshot()
    result = gokku("ssh-keys:add", "alice", input=bob.public.encode())
    assert result.code == 1 and "already registered" in result.stderr
    result = gokku("ssh-keys:add", "Bad/Name", input=bob.public.encode())
    assert result.code == 2 and "invalid key name" in result.stderr
    result = gokku("ssh-keys:add", "bob", "/nonexistent.pub")
    assert result.code == 1 and "no such file" in result.stderr
    assert gokku.snapshot() == before


def test_remove_by_name_and_fingerprint(gokku, alice: KeyPair, bob: KeyPair) -> None:
    gokku.ok("ssh-keys:add", "bob", input=bob.public.encode())
    gokku.ok("ssh-keys:remove", "--fingerprint", _fingerprint(bob))
    gokku.ok("ssh-keys:remove", "alice")
    assert json.loads(gokku.ok("ssh-keys:list", "--format", "json").stdout) == []
    assert (gokku.root / "ssh" / "authorized_keys").read_text() == ""
    before = gokku.snapshot()
    assert gokku("ssh-keys:remove", "alice").code == 1
    assert gokku("ssh-keys:remove").code == 2
    assert gokku("ssh-keys:remove", "alice", "--fingerprint", "SHA256:x").code == 2
    assert gokku.snapshot() == before


def test_concurrent_adds_all_land(gokku, keydir: Path, ssh_config) -> None:
    pairs = [make_key(keydir, f"k{i}") for i in range(8)]
    threads = [
        threading.Thread(target=gokku.ok, args=("ssh-keys:add", f"k{i}", str(p.path) + ".pub"))
        for i, p in enumerate(pairs)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    listed = json.loads(gokku.ok("ssh-keys:list", "--format", "json").stdout)
    assert sorted(k["name"] for k in listed) == [f"k{i}" for i in range(8)]
    assert len((gokku.root / "ssh" / "authorized_keys").read_text().splitlines()) == 8


def test_ssh_command_refuses_unknown_key_and_missing_flag(gokku, alice: KeyPair) -> None:
    stranger = {"SSH_ORIGINAL_COMMAND": "whoami"}
    result = gokku("ssh-command", "--fingerprint", "SHA256:nobody", env=stranger)
    assert result.code == 1 and "no longer registered" in result.stderr
    assert gokku("ssh-command", env={"SSH_ORIGINAL_COMMAND": "whoami"}).code == 2


def test_bad_ssh_settings_are_refused(gokku) -> None:
    (gokku.root / "gokku.yml").write_text("ssh:\n  max_sesions: 3\n")
    result = gokku("serve")
    assert result.code == 1 and "unknown setting(s) max_sesions" in result.stderr
    (gokku.root / "gokku.yml").write_text("ssh:\n  port: '22'\n")
    assert "must be an integer" in gokku("serve").stderr
    (gokku.root / "gokku.yml").write_text("ssh:\n  rekey_limit: 0\n")
    result = gokku("serve")
    assert result.code == 1 and "ssh.rekey_limit must be at least 1" in result.stderr
    (gokku.root / "gokku.yml").unlink()
    assert gokku("serve", "--port", "99999").code == 2
