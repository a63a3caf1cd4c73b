"""A throwaway S3-compatible server (moto's, from the ``dev`` extra) on loopback, for benchmarks and tests.

The server runs as a child process on a free 127.0.0.1 port and is stopped by its PID. Every request
it serves is one line of its access log, which is how requests are counted (all client processes,
Dask workers included, go through it).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Dummy credentials the backend's chain picks up from the environment (moto accepts any).
TEST_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "emotalker-test-key-id",
    "AWS_SECRET_ACCESS_KEY": "emotalker-test-secret",
}
_REQUEST = re.compile(r'"(GET|PUT|POST|HEAD|DELETE) (\S+) HTTP/[\d.]+" (\d{3})')


@dataclass
class S3Server:
    """A running server: its endpoint, the options a store needs, and its request log."""

    endpoint: str
    log: Path
    pid: int

    @property
    def storage_options(self) -> dict[str, Any]:
        return {"endpoint_url": self.endpoint, "client_kwargs": {"region_name": "us-east-1"}}

    def mark(self) -> int:
        """Current log position: count only what happens after it with ``requests(since=...)``."""
        return self.log.stat().st_size

    def requests(self, since: int = 0, under: str = "") -> Counter[str]:
        """Requests served since a ``mark()``, by HTTP method (plus ``total``); with ``under``, only those
        whose path contains it."""
        with open(self.log, "rb") as fh:
            fh.seek(since)
            text = fh.read().decode(errors="replace")
        counts: Counter[str] = Counter(m.group(1) for m in _REQUEST.finditer(text) if under in m.group(2))
        counts["total"] = sum(counts.values())
        return counts


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def moto_s3(workdir: Path, buckets: tuple[str, ...] = ("emotalker",)) -> Iterator[S3Server]:
    """Start ``moto_server`` on 127.0.0.1, create ``buckets``, yield it, stop it by PID.

    Sets the test credentials in ``os.environ`` for the duration (the backend's credential chain reads
    them; nothing puts them in a config).
    """
    import boto3

    workdir.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    log = workdir / f"moto-{port}.log"
    cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    saved = {k: os.environ.get(k) for k in TEST_CREDENTIALS}
    os.environ.update(TEST_CREDENTIALS)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto server did not start: {log.read_text()[-2000:]}") from None
                time.sleep(0.2)
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        for b in buckets:
            s3.create_bucket(Bucket=b)
        yield S3Server(endpoint=endpoint, log=log, pid=proc.pid)
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
