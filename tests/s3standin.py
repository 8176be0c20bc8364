"""A local stand-in for S3: moto's server, over HTTPS with a certificate made here.

No real cloud is reachable from the test machines, so the off-site backup targets are
tested against moto, which speaks S3's HTTP API. pgBackRest talks to S3 over HTTPS
only and checks the certificate: the stand-in serves one made by openssl for
"localhost" and 127.0.0.1, which the targets trust through their CA file.
"""

import contextlib
import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REGION = "us-east-1"


@dataclass(frozen=True)
class S3:
    """A running stand-in: where it listens and the certificate to trust."""

    endpoint: str  # https://localhost:PORT
    ca_file: Path
    key_id: str  # an access key that may do anything with S3 there
    secret: str
    serving: "_Serving"

    @contextmanager
    def down(self) -> Iterator[None]:
        """The stand-in stopped for the duration: its port refuses connections, as an
        endpoint that is down does; then it serves again, on the same port, with the
        same objects (moto keeps them in this process)."""
        self.serving.stop()
        try:
            yield
        finally:
            self.serving.serve()

    def client(self, service: str = "s3", key_id: str = "", secret: str = ""):  # noqa: ANN201
        """A boto3 client of the stand-in, with its access key unless given another."""
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=key_id or self.key_id,
            aws_secret_access_key=secret or self.secret,
            verify=str(self.ca_file),
        )

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every object's key under ``prefix`` in ``bucket``."""
        pages = (
            self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        )
        return [o["Key"] for page in pages for o in page.get("Contents", [])]


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1, and its key."""
    cert, key = directory / "s3.crt", directory / "s3.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    cert.chmod(0o644)
    return cert, key


def _closing_handler(base: type) -> type:
    """moto's request handler, ending each TLS connection with close_notify.

    Python closes an SSL socket without it; pgBackRest, which reads a response without a
    length up to the end of the connection, takes that for a cut connection and retries.
    """

    class Handler(base):
        def handle(self) -> None:
            super().handle()
            with contextlib.suppress(OSError, ValueError):
                self.connection.unwrap()

    return Handler


def _moto_api(endpoint: str, cert: Path, call: str, body: bytes) -> None:
    """POST to moto's own API (reset-auth: from when on it checks signatures; reset)."""
    import urllib.request

    request = urllib.request.Request(
        f"{endpoint}/moto-api/{call}",
        data=body,
        headers={"Content-Type": "application/octet-stream"},
        method="POST",
    )
    context = ssl.create_default_context(cafile=str(cert))
    with urllib.request.urlopen(request, context=context) as answer:
        answer.read()


def _with_credentials(endpoint: str, cert: Path, serving: "_Serving") -> S3:
    """An IAM user allowed everything on S3, its access key, and from then on moto
    checking every request's signature: wrong credentials are refused as S3 does."""
    import json

    open_s3 = S3(endpoint, cert, "bootstrap", "bootstrap", serving)
    iam = open_s3.client("iam")
    iam.create_user(UserName="gokku")
    iam.put_user_policy(
        UserName="gokku",
        PolicyName="s3",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
            }
        ),
    )
    key = iam.create_access_key(UserName="gokku")["AccessKey"]
    _moto_api(endpoint, cert, "reset-auth", b"0")
    return S3(endpoint, cert, key["AccessKeyId"], key["SecretAccessKey"], serving)


class _Serving:
    """moto's app served over TLS on a port of 127.0.0.1 (a free one the first time),
    in a thread; stop closes the port (connections are refused), serve opens it again."""

    def __init__(self, cert: Path, key: Path) -> None:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

        self.cert, self.key, self.port = cert, key, 0
        self.app = DomainDispatcherApplication(create_backend_app)
        self.serve()

    def serve(self) -> None:
        from moto.moto_server.werkzeug_app import MotoRequestHandler
        from werkzeug.serving import make_server

        self.server = make_server(
            "127.0.0.1",
            self.port,
            self.app,
            threaded=True,
            request_handler=_closing_handler(MotoRequestHandler),
            ssl_context=(str(self.cert), str(self.key)),
        )
        self.port = self.server.server_port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@contextmanager
def s3_standin(directory: Path) -> Iterator[S3]:
    """moto's S3 on a free port of 127.0.0.1, over TLS, for the duration."""
    cert, key = make_certificate(directory)
    serving = _Serving(cert, key)
    endpoint = f"https://localhost:{serving.port}"
    try:
        yield _with_credentials(endpoint, cert, serving)
    finally:
        # moto's state is the process's: the next stand-in starts from nothing again.
        _moto_api(endpoint, cert, "reset-auth", b"inf")
        _moto_api(endpoint, cert, "reset", b"")
        serving.stop()
