"""A loopback HTTP file server for download tests: Range support, scripted connection drops, request log."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Behaviour:
    """How the server misbehaves; names map to served file names."""

    ignore_range: set[str] = field(default_factory=set)  # always answer 200 with the whole file
    drop_after: dict[str, list[int]] = field(default_factory=dict)  # per request: close after N body bytes
    status: dict[str, int] = field(default_factory=dict)  # fixed error status


class FileServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, files: dict[str, bytes], behaviour: Behaviour) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files = files
        self.behaviour = behaviour
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.lock = threading.Lock()

    def url(self, name: str) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/{name}"

    def count(self, name: str) -> int:
        with self.lock:
            return sum(1 for p, _ in self.requests if p == name)


class _Handler(BaseHTTPRequestHandler):
    server: FileServer

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep pytest output clean

    def do_GET(self) -> None:
        name = self.path.lstrip("/")
        srv, beh = self.server, self.server.behaviour
        rng = self.headers.get("Range")
        with srv.lock:
            srv.requests.append((name, rng))
            drops = beh.drop_after.get(name)
            drop = drops.pop(0) if drops else None
        if name in beh.status:
            self.send_error(beh.status[name])
            return
        data = srv.files.get(name)
        if data is None:
            self.send_error(404)
            return
        start = 0
        m = re.match(r"bytes=(\d+)-(\d*)$", rng or "")
        if m and name not in beh.ignore_range:
            start = int(m.group(1))
            end = int(m.group(2)) if m.group(2) else len(data) - 1
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = data[start : end + 1]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{start + len(body) - 1}/{len(data)}")
        else:
            body = data
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "application/x-tar")
        self.end_headers()
        if drop is not None:
            self.wfile.write(body[:drop])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@contextmanager
def serve(files: dict[str, bytes], behaviour: Behaviour | None = None) -> Iterator[FileServer]:
    """Run a FileServer on 127.0.0.1 in a thread for the duration of the block; always shut down."""
    srv = FileServer(files, behaviour or Behaviour())
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)
