"""SSH signatures over index files (``ssh-keygen -Y``), in Gokku's own namespace.

The namespace keeps a signature made for anything else (a git commit, a file signed for
another tool) from passing for an index's. Who may sign is the ``allowed_signers`` file
the admin gave for the index, in ssh-keygen's own format.
"""

import os
import subprocess
import tempfile
from pathlib import Path

from gokku.errors import GokkuError

NAMESPACE = "gokku-plugin-index"
TIMEOUT = 30


def _keygen(args: list[str], data: bytes | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            ["ssh-keygen", *args],
            input=data,
            stdin=None if data is not None else subprocess.DEVNULL,
            capture_output=True,
            timeout=TIMEOUT,
        )
    except FileNotFoundError:
        raise GokkuError("ssh-keygen is not installed (package openssh-client)") from None


def sign(path: Path, key: Path) -> Path:
    """Write ``PATH.sig`` beside ``path``, signed with the private key ``key``."""
    signature = path.with_name(path.name + ".sig")
    signature.unlink(missing_ok=True)  # ssh-keygen will not overwrite one
    proc = _keygen(["-Y", "sign", "-q", "-f", str(key), "-n", NAMESPACE, str(path)])
    if proc.returncode != 0:
        raise GokkuError(f"could not sign {path.name} with {key}: {_reason(proc)}")
    return signature


def check_allowed_signers(text: str) -> str:
    """The allowed_signers text as ssh-keygen reads it, or an error naming the bad line."""
    lines = [line.strip() for line in text.splitlines()]
    kept = [line for line in lines if line and not line.startswith("#")]
    if not kept:
        raise GokkuError("give the index's signers on stdin, in ssh-keygen's allowed_signers form")
    for line in kept:
        if len(line.split()) < 3 or not any(
            w.startswith(("ssh-", "ecdsa-", "sk-")) for w in line.split()
        ):
            raise GokkuError(f"not an allowed_signers line (PRINCIPAL KEYTYPE KEY): {line[:80]!r}")
    return "\n".join(kept) + "\n"


def verify(data: bytes, signature: bytes | None, allowed_signers: Path, what: str) -> str:
    """Return the principal that signed ``data``; raise when nobody trusted did."""
    if not signature:
        raise GokkuError(f"{what} is not signed: refused")
    with tempfile.TemporaryDirectory(prefix="gokku-sig-") as tmp:
        sig_path = Path(tmp, "data.sig")
        sig_path.write_bytes(signature)
        found = _keygen(["-Y", "find-principals", "-s", str(sig_path), "-f", str(allowed_signers)])
        principals = found.stdout.decode(errors="replace").split()
        if found.returncode != 0 or not principals:
            raise GokkuError(f"{what} is not signed by a signer this index trusts: refused")
        for principal in principals:
            checked = _keygen(
                [
                    *("-Y", "verify", "-f", str(allowed_signers), "-I", principal),
                    *("-n", NAMESPACE, "-s", str(sig_path)),
                ],
                data,
            )
            if checked.returncode == 0:
                return principal
    raise GokkuError(f"{what} does not match its signature: refused")


def _reason(proc: subprocess.CompletedProcess) -> str:
    lines = [x for x in proc.stderr.decode(errors="replace").splitlines() if x.strip()]
    return lines[-1] if lines else f"exit {proc.returncode}"


def private_key(text: str) -> Path:
    """The signing key the publisher named, which must exist and be readable."""
    path = Path(text).expanduser()
    if not path.is_file() or not os.access(path, os.R_OK):
        raise GokkuError(f"signing key {text} does not exist or cannot be read")
    return path
