"""A read-level caller never sees a secret, however the output is cut: a line longer than
the masker's buffer, a secret split between two reads at the buffer's edge, output with
no newline at all. The stream tests feed the masker the exact chunks a pipe could give;
the door tests run a real plugin command with a key that may only read."""

import time
from pathlib import Path

import pytest
from conftest import Gokku, write_plugin
from sshkit import *  # noqa: F403 - fixtures
from sshkit import Door, KeyPair, make_key

from gokku import redact
from gokku.redact import MASK, MAX_LINE

SECRET = b"pw-lsvc-s3cretvalue"
RECORD = {"config": {"password": SECRET.decode()}}


def masked(chunks: list[bytes], fields: tuple[str, ...] = ()) -> bytes:
    stream = redact.Stream(redact.masker(RECORD, fields))
    return b"".join(stream.feed(chunk) for chunk in chunks) + stream.end()


@pytest.mark.parametrize("ending", [b"\n", b""], ids=["line", "no newline"])
def test_a_known_secret_cut_anywhere_at_the_buffers_edge_is_masked(ending: bytes) -> None:
    """The secret straddles MAX_LINE; the first read ends at each byte of it."""
    at = MAX_LINE - len(SECRET) // 2
    data = b"x" * at + SECRET + b"y" * 5000 + ending
    for split in range(at - 1, at + len(SECRET) + 2):
        out = masked([data[:split], data[split:]])
        assert out == b"x" * at + MASK + b"y" * 5000 + ending, split


def test_a_secret_in_a_line_many_buffers_long_is_masked_wherever_it_falls() -> None:
    """Secrets every 50001 bytes of a 1 MB line, read 65536 bytes at a time."""
    data = b"".join(b"z" * 49982 + SECRET for _ in range(20)) + b"\nnext line\n"
    chunks = [data[i : i + MAX_LINE] for i in range(0, len(data), MAX_LINE)]
    assert masked(chunks) == data.replace(SECRET, MASK)


def test_a_shape_cut_at_the_buffers_edge_is_masked() -> None:
    data = b"a" * (MAX_LINE - 12) + b" password=" + b"q" * 100 + b" tail"
    for split in (MAX_LINE - 4, MAX_LINE + 1, MAX_LINE + 50):
        out = masked([data[:split], data[split:]])
        assert out == b"a" * (MAX_LINE - 12) + b" password=" + MASK + b" tail", split


def test_a_declared_fields_long_value_is_dropped_to_the_end_of_its_line() -> None:
    data = b"Handle: " + b"h" * (3 * MAX_LINE) + b"\r\nOther: fine\n"
    chunks = [data[i : i + 4096] for i in range(0, len(data), 4096)]
    assert masked(chunks, ("Handle",)) == b"Handle: " + MASK + b"\r\nOther: fine\n"


def test_a_shape_longer_than_any_buffer_is_dropped_to_its_end() -> None:
    data = b"token=" + b"v" * (20 * MAX_LINE) + b" after\n"
    chunks = [data[i : i + MAX_LINE] for i in range(0, len(data), MAX_LINE)]
    assert masked(chunks) == b"token=" + MASK + b" after\n"


def test_a_long_line_with_no_secret_is_passed_on_as_it_comes() -> None:
    """Holding back is bounded: most of a long line is sent before it ends."""
    stream = redact.Stream(redact.masker(RECORD, ()))
    sent = b"".join(stream.feed(b"x" * MAX_LINE) for _ in range(4))
    assert len(sent) >= 4 * MAX_LINE - redact.SHAPE_WINDOW and set(sent) == {ord("x")}
    assert sent + stream.end() == b"x" * 4 * MAX_LINE


def test_a_long_run_of_word_characters_takes_no_quadratic_time() -> None:
    """A 1 MB line of letters (a blob in a log) is masked in well under a second; the old
    shape pattern took 90 s for 64 KiB."""
    started = time.monotonic()
    line = b"tokens" * (3 * MAX_LINE) + b" password=abc\n"
    assert masked([line]) == line.replace(b"=abc", b"=" + MASK)
    assert time.monotonic() - started < 5


# A plugin whose info prints one long line with no newline, the service's password
# written in two pieces around the masker's buffer size, and again near the end.
LONG_INFO = (
    'pw="pw-$1-s3cretvalue"\n'
    f"head -c {MAX_LINE - 9} /dev/zero | tr '\\0' x\n"
    'printf %s "${pw:0:9}"\n'
    'printf %s "${pw:9}"\n'
    "head -c 200000 /dev/zero | tr '\\0' y\n"
    'printf %s "$pw"\n'
)


# A read command that prefers a terminal: says what its streams are, then the password.
LOOK = (
    'for fd in 0 1 2; do if [ -t "$fd" ]; then printf "%s:tty " "$fd"; '
    'else printf "%s:pipe " "$fd"; fi; done\n'
    'echo "password is pw-$1-s3cretvalue"\n'
)


@pytest.fixture
def reader(gokku: Gokku, keydir: Path, tmp_path: Path) -> KeyPair:
    tree = write_plugin(
        tmp_path / "src" / "long",
        commands={"commands/info": LONG_INFO, "commands/look": LOOK},
        install='update_service_config "$1" password "pw-$1-s3cretvalue"\n',
    )
    (tree / "plugin.yml").write_text("commands:\n  look: {tty: prefer, access: read}\n")
    gokku.ok("plugins:add", str(tree))
    gokku.ok("services:create", "long", "--name", "lsvc")
    key = make_key(keydir, "carol")
    gokku.ok("ssh-keys:add", "carol", input=key.public.encode())
    gokku.ok("access:grant", "carol", "service:lsvc", "--read")
    return key


def test_a_read_key_gets_a_long_line_with_no_newline_masked(door: Door, reader: KeyPair) -> None:
    result = door.ssh("long:info lsvc", key=reader.path)
    expected = b"x" * (MAX_LINE - 9) + MASK + b"y" * 200000 + MASK
    assert result.code == 0 and result.out == expected


def test_a_terminal_for_a_read_key_is_kept_from_its_output(door: Door, reader: KeyPair) -> None:
    """Output for a caller who may only read goes through the masker, terminal or not:
    a program that draws on a terminal (cursor moves, a line in pieces) could show a
    secret no line masker sees whole. So such a script writes to pipes even when the
    client asked for a terminal (``ssh -t``), and only its stdin is one."""
    mine = door.ssh("long:look lsvc", "-tt")
    assert mine.stdout.startswith("0:tty 1:tty 2:tty"), mine
    theirs = door.ssh("long:look lsvc", "-tt", key=reader.path)
    assert theirs.code == 0
    assert theirs.stdout.replace("\r\n", "\n") == "0:tty 1:pipe 2:pipe password is <redacted>\n"
