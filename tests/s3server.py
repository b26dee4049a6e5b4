"""A real S3 API on loopback for tests (moto's server mode), and a proxy in front of it that misbehaves.

    with S3Server() as s3:                    # moto on 127.0.0.1:<free port>, bucket `sluice` created
        s3.env                                # AWS_* variables that point boto/s3fs/Polars at it (fake keys)
        s3.url("releases")                    # "s3://sluice/releases"
        with s3.faults(every=3, kinds=("500", "503", "drop")) as proxy:   # every 3rd request fails
            ...                               # s3.env / os.environ now point at the proxy; proxy.injected counts

The fixtures in tests/conftest.py (`s3`, `s3_faults`) set os.environ for one test and give each test its own
bucket. Worker processes (a Dask cluster) need only `s3.env` in their environment. Standalone, for a
cluster started by hand: `python tests/s3server.py [PORT]` prints the variables to export and serves until
Ctrl-C.

Fault kinds (the request is not passed on unless said otherwise):
    500       HTTP 500 InternalError            503   HTTP 503 SlowDown
    throttle  HTTP 400 Throttling (an S3 throttle other than SlowDown)
    drop      the connection closed without an answer
    lost      passed on (the server does it), then the connection closed: the answer is lost
    cut       passed on, then only half the answer's body sent (a truncated, half-read object)
"""

from __future__ import annotations

import http.client
import itertools
import logging
import os
import socket
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAKE_KEYS = {"AWS_ACCESS_KEY_ID": "sluice-test-key-id", "AWS_SECRET_ACCESS_KEY": "sluice-test-SECRET-do-not-leak-42",
             "AWS_DEFAULT_REGION": "us-east-1"}
KINDS = ("500", "503", "throttle", "drop", "lost", "cut")
_ERROR = {"500": (500, "InternalError", "We encountered an internal error. Please try again."),
          "503": (503, "SlowDown", "Please reduce your request rate."),
          "throttle": (400, "Throttling", "Rate exceeded")}


class S3Server:
    def __init__(self, port: int = 0, bucket: str = "sluice") -> None:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request otherwise
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self.bucket = bucket
        self.endpoint = ""

    def __enter__(self) -> S3Server:
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        self.env = FAKE_KEYS | {"AWS_ENDPOINT_URL_S3": self.endpoint}
        self.make_bucket(self.bucket)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop()

    def make_bucket(self, bucket: str) -> None:
        conn = http.client.HTTPConnection(self.endpoint.removeprefix("http://"), timeout=10)
        conn.request("PUT", f"/{bucket}")
        response = conn.getresponse()
        response.read()
        conn.close()
        if response.status not in (200, 409):
            raise RuntimeError(f"moto: cannot create bucket {bucket}: HTTP {response.status}")

    def fresh_bucket(self) -> str:
        bucket = f"t-{uuid.uuid4().hex[:12]}"
        self.make_bucket(bucket)
        return bucket

    def url(self, *path: str, bucket: str | None = None) -> str:
        return "/".join([f"s3://{bucket or self.bucket}", *path])

    @contextmanager
    def faults(self, every: int = 3, kinds: tuple[str, ...] = KINDS, methods: tuple[str, ...] = (),
               limit: int | None = None) -> Iterator[FaultProxy]:
        """A proxy in front of the server for the duration: os.environ (and self.env) point at it."""
        with FaultProxy(self.endpoint, every, kinds, methods, limit) as proxy:
            saved = os.environ.get("AWS_ENDPOINT_URL_S3")
            os.environ["AWS_ENDPOINT_URL_S3"] = self.env["AWS_ENDPOINT_URL_S3"] = proxy.endpoint
            try:
                yield proxy
            finally:
                os.environ["AWS_ENDPOINT_URL_S3"] = self.env["AWS_ENDPOINT_URL_S3"] = self.endpoint
                if saved is None:
                    os.environ.pop("AWS_ENDPOINT_URL_S3")


class FaultProxy:
    """HTTP proxy to `target`: every `every`-th request (of `methods`, all if empty) gets the next fault of
    `kinds` in turn, at most `limit` faults; `injected` counts them by kind, `requests` counts all requests."""

    def __init__(self, target: str, every: int, kinds: tuple[str, ...], methods: tuple[str, ...] = (),
                 limit: int | None = None) -> None:
        unknown = set(kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {KINDS}")
        self.target = target.removeprefix("http://")
        self.every, self.methods, self.limit = every, methods, limit
        self._next_kind = itertools.cycle(kinds)
        self._lock = threading.Lock()
        self.injected: Counter = Counter()
        self.log: list[tuple[str, str, str]] = []  # (kind, method, path) of every fault injected
        self.exchanges: list[tuple[str, str, int, int]] = []  # (method, path, bytes sent, bytes answered) forwarded
        self.requests = 0
        self._eligible = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _any(self) -> None:
                proxy._handle(self)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _any

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FaultProxy:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _fault(self, method: str, path: str) -> str | None:
        with self._lock:
            self.requests += 1
            if self.methods and method not in self.methods:
                return None
            if self.limit is not None and sum(self.injected.values()) >= self.limit:
                return None
            self._eligible += 1
            if self._eligible % self.every:
                return None
            kind = next(self._next_kind)
            self.injected[kind] += 1
            self.log.append((kind, method, path))
            return kind

    def _handle(self, req: BaseHTTPRequestHandler) -> None:
        if req.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = _read_chunked(req.rfile)
        else:
            body = req.rfile.read(int(req.headers.get("Content-Length") or 0))
        kind = self._fault(req.command, req.path)
        if kind in _ERROR:
            status, code, message = _ERROR[kind]
            xml = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{message}</Message>'
                   f"<RequestId>fault</RequestId></Error>").encode()
            req.send_response(status)
            req.send_header("Content-Type", "application/xml")
            req.send_header("Content-Length", str(len(xml)))
            req.end_headers()
            req.wfile.write(xml)
            return
        if kind == "drop":
            _hang_up(req)
            return
        conn = http.client.HTTPConnection(self.target, timeout=60)
        headers = {k: v for k, v in req.headers.items() if k.lower() != "transfer-encoding"}
        headers["Content-Length"] = str(len(body))
        conn.request(req.command, req.path, body=body, headers=headers)
        response = conn.getresponse()
        payload = response.read()
        conn.close()
        self.exchanges.append((req.command, req.path, len(body), len(payload)))
        if kind == "lost":
            _hang_up(req)
            return
        req.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in ("transfer-encoding", "connection", "content-length", "date", "server"):
                req.send_header(key, value)
        length = response.getheader("Content-Length") if req.command == "HEAD" else None
        req.send_header("Content-Length", length or str(len(payload)))  # HEAD: the object's size, no body
        req.end_headers()
        if req.command == "HEAD":
            return
        if kind == "cut" and len(payload) > 1:
            req.wfile.write(payload[: len(payload) // 2])
            req.wfile.flush()
            _hang_up(req)
            return
        req.wfile.write(payload)


def _hang_up(req: BaseHTTPRequestHandler) -> None:
    req.close_connection = True
    try:
        req.connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _read_chunked(stream) -> bytes:
    out = bytearray()
    while True:
        size = int(stream.readline().split(b";")[0].strip() or b"0", 16)
        if size == 0:
            stream.readline()
            return bytes(out)
        out += stream.read(size)
        stream.readline()


if __name__ == "__main__":
    with S3Server(port=int(sys.argv[1]) if len(sys.argv) > 1 else 0) as server:
        for key, value in server.env.items():
            print(f"export {key}={value}")
        print(f"# bucket: s3://{server.bucket}; Ctrl-C stops the server", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
