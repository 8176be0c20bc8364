"""An SSH public key's wire format (RFC 4253, 5656, 8709 and OpenSSH's ``sk-`` keys),
checked field by field.

``ssh-keys:add`` refuses a key that no client could log in with: cut short by a copy and
paste, with bytes after its last field, or with numbers no private key can have. asyncssh
reads keys the same way, but importing it costs a CLI call 150 ms for a check of a few
hundred bytes, so the check is here. Its verdicts are asyncssh's (the tests compare them):
the same fields, the same RSA rules as ``cryptography``, and the point of an ECDSA key on
its curve. An Ed25519 key is any 32 bytes, as for asyncssh and OpenSSH.
"""

from collections.abc import Callable

from gokku.errors import UsageError

# The NIST curves (FIPS 186-4, D.1.2): prime p, coefficient b (a is -3), coordinate bytes.
CURVES = {
    b"nistp256": (
        2**256 - 2**224 + 2**192 + 2**96 - 1,
        0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B,
        32,
    ),
    b"nistp384": (
        2**384 - 2**128 - 2**96 + 2**32 - 1,
        int(
            "B3312FA7E23EE7E4988E056BE3F82D19181D9C6EFE8141120314088F5013875A"
            "C656398D8A2ED19D2A85C8EDD3EC2AEF",
            16,
        ),
        48,
    ),
    b"nistp521": (
        2**521 - 1,
        int(
            "051953EB9618E1C9A1F929A21A0B68540EEA2DA725B99B315F3B8B489918EF10"
            "9E156193951EC7E937B1652C0BD3BB1BF073573DF883D2C34F1EF451FD46B503F00",
            16,
        ),
        66,
    ),
}


class _Fields:
    """The blob read one length-prefixed field at a time."""

    def __init__(self, blob: bytes) -> None:
        self.blob = blob
        self.at = 0

    def string(self) -> bytes:
        if self.at + 4 > len(self.blob):
            raise ValueError("it ends before its last field")
        length = int.from_bytes(self.blob[self.at : self.at + 4], "big")
        self.at += 4
        if self.at + length > len(self.blob):
            raise ValueError("it ends before its last field")
        value = self.blob[self.at : self.at + length]
        self.at += length
        return value

    def mpint(self) -> int:
        return int.from_bytes(self.string(), "big", signed=True)

    def end(self) -> None:
        if self.at != len(self.blob):
            raise ValueError("it has bytes after its last field")


def check(key_type: str, blob: bytes) -> None:
    """UsageError unless ``blob`` is a well-formed public key of ``key_type``."""
    fields = _Fields(blob)
    try:
        if fields.string() != key_type.encode():
            raise UsageError(f"invalid public key: the key data is not a {key_type} key")
        TYPES[key_type](fields)
        fields.end()
    except ValueError as exc:
        raise UsageError(f"invalid public key: {exc}") from None


def _rsa(fields: _Fields) -> None:
    exponent, modulus = fields.mpint(), fields.mpint()
    if modulus < 3 or not 3 <= exponent < modulus or exponent % 2 == 0:
        raise ValueError("its RSA exponent and modulus are not those of any RSA key")


def _ed25519(fields: _Fields) -> None:
    if len(fields.string()) != 32:
        raise ValueError("an Ed25519 key is 32 bytes")


def _ecdsa(curve: bytes) -> Callable[[_Fields], None]:
    def read(fields: _Fields) -> None:
        if fields.string() != curve:
            raise ValueError(f"its curve is not {curve.decode()}")
        p, b, size = CURVES[curve]
        point = fields.string()
        if len(point) != 1 + 2 * size or point[0] != 4:
            raise ValueError("its point is not an uncompressed point of its curve")
        x = int.from_bytes(point[1 : 1 + size], "big")
        y = int.from_bytes(point[1 + size :], "big")
        if x >= p or y >= p or (y * y - x * x * x + 3 * x - b) % p:
            raise ValueError("its point is not on its curve")

    return read


def _security_key(read: Callable[[_Fields], None]) -> Callable[[_Fields], None]:
    """A FIDO key: the same key, then the application it was made for (text)."""

    def with_application(fields: _Fields) -> None:
        read(fields)
        try:
            fields.string().decode()
        except UnicodeDecodeError:
            raise ValueError("its application is not text") from None

    return with_application


# The key types Gokku accepts, in the order its messages list them.
TYPES = {
    "ssh-ed25519": _ed25519,
    "ssh-rsa": _rsa,
    "ecdsa-sha2-nistp256": _ecdsa(b"nistp256"),
    "ecdsa-sha2-nistp384": _ecdsa(b"nistp384"),
    "ecdsa-sha2-nistp521": _ecdsa(b"nistp521"),
    "sk-ssh-ed25519@openssh.com": _security_key(_ed25519),
    "sk-ecdsa-sha2-nistp256@openssh.com": _security_key(_ecdsa(b"nistp256")),
}
