"""A fault-injecting HTTP proxy for S3 tests: sits in front of the moto server and answers a
share of requests with 503 SlowDown or drops the connection, deterministically.

- `share_503`: that share of requests gets `503 SlowDown` without reaching the server;
- `share_reset`: that share reaches the server, then the connection is reset before the reply
  (the request may have taken effect: what idempotent retries must survive);
- `flaky`: {path substring: n}: the first n requests whose path contains it get 503, enough to
  exhaust the client's own retries so the task-level retry shows;
- `forbidden`: requests whose path contains one of these get `403 AccessDenied`.

Decisions come from a seeded RNG drawn once per request, in arrival order. `stats` counts what
was done.
"""

from __future__ import annotations

import http.client
import random
import socket
import struct
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}


@dataclass
class FaultPlan:
    share_503: float = 0.0
    share_reset: float = 0.0
    seed: int = 1
    flaky: dict[str, int] = field(default_factory=dict)
    forbidden: tuple[str, ...] = ()


def _error_body(code: str, message: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
        f"<Message>{message}</Message><RequestId>faultproxy</RequestId></Error>"
    ).encode()


class _Proxy(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: str, plan: FaultPlan) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.plan = plan
        self.rng = random.Random(plan.seed)
        self.flaky_left = dict(plan.flaky)
        self.lock = threading.Lock()
        self.stats: Counter[str] = Counter()

    def decide(self, path: str) -> str:
        """What to do with one request: forward, 503, reset or 403."""
        with self.lock:
            self.stats["requests"] += 1
            draw = self.rng.random()
            if any(part in path for part in self.plan.forbidden):
                return self._count("403")
            for part, left in self.flaky_left.items():
                if part in path and left > 0:
                    self.flaky_left[part] = left - 1
                    return self._count("503")
            if draw < self.plan.share_503:
                return self._count("503")
            if draw < self.plan.share_503 + self.plan.share_reset:
                return self._count("reset")
            return self._count("forward")

    def _count(self, what: str) -> str:
        self.stats[what] += 1
        return what


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Proxy

    def log_message(self, format: str, *args: object) -> None:  # quiet: tests read stats
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                chunk = self.rfile.read(size)
                self.rfile.readline()
                if size == 0:
                    break
                chunks.append(chunk)
            self._skip_trailers()
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _skip_trailers(self) -> None:
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass

    def _handle(self) -> None:
        body = self._body()
        action = self.server.decide(self.path)
        if action in ("503", "403"):
            code, name, text = (
                (503, "SlowDown", "Please reduce your request rate.")
                if action == "503"
                else (403, "AccessDenied", "Access Denied")
            )
            self._reply(code, {"Content-Type": "application/xml"}, _error_body(name, text))
            return
        status, headers, payload = self._forward(body)
        if action == "reset":
            self._reset()
            return
        self._reply(status, headers, payload)

    def _forward(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(*self.server.upstream, timeout=60)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            if body or self.command in ("PUT", "POST"):
                headers["Content-Length"] = str(len(body))
            conn.request(self.command, self.path, body=body or None, headers=headers)
            response = conn.getresponse()
            payload = response.read()
            kept = {k: v for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP}
            return response.status, kept, payload
        finally:
            conn.close()

    def _reply(self, status: int, headers: dict[str, str], payload: bytes) -> None:
        self.send_response_only(status)
        for name, value in headers.items():
            if name.lower() not in ("content-length", "date", "server"):
                self.send_header(name, value)
        length = headers.get("Content-Length") or headers.get("content-length")
        is_head = self.command == "HEAD"
        self.send_header("Content-Length", length if is_head and length else str(len(payload)))
        self.end_headers()
        if not is_head:
            self.wfile.write(payload)

    def _reset(self) -> None:
        """Close with RST: the client sees 'connection reset by peer'."""
        self.request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.request.close()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle  # noqa: N815 (http.server names)


@contextmanager
def fault_proxy(upstream: str, plan: FaultPlan) -> Iterator[tuple[str, Counter[str]]]:
    """Runs the proxy in a thread; yields its URL and its live `stats`."""
    server = _Proxy(upstream, plan)
    thread = threading.Thread(target=server.serve_forever, name="faultproxy", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.stats
    finally:
        server.shutdown()
        server.server_close()
