"""One local Prefect server per ``PREFECT_HOME``, started by the CLI on first use and reused afterwards.

Without ``PREFECT_API_URL`` every ``emotalker`` call would start Prefect's temporary server, most of a
no-op feature refresh (README, benchmark ``noop_rerun``). Instead the first call starts ``prefect server
start`` in the background on 127.0.0.1, records its pid and URL in ``PREFECT_HOME/emotalker-server.json``
and later calls reuse it; ``emotalker server stop`` ends it by that pid. A configured ``PREFECT_API_URL``
(environment, profile, or an active test harness) always wins and no local server is started.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

from emotalker.storage.files import file_lock, write_json_atomic

STATE_FILE = "emotalker-server.json"
LOG_FILE = "emotalker-server.log"
LOCK_FILE = "emotalker-server.lock"


class LocalServerError(OSError):
    """The local server did not come up (the message names its log file): exit 2 from the CLI."""


def prefect_home() -> Path:
    from prefect.settings import get_current_settings

    return Path(get_current_settings().home).expanduser()


def _healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as resp:  # noqa: S310 (loopback URL)
            return resp.status == 200
    except OSError:
        return False


def _is_our_server(pid: int) -> bool:
    """The pid still runs a ``prefect server start`` (guards against a reused pid)."""
    try:
        cmd = " ".join(psutil.Process(pid).cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    return "prefect" in cmd and "server" in cmd and "start" in cmd


def running(home: Path | None = None) -> dict[str, Any] | None:
    """The recorded server of ``home`` (pid, url, log) when its process is alive, else None."""
    state = (home or prefect_home()) / STATE_FILE
    try:
        info = json.loads(state.read_text())
    except (OSError, ValueError):
        return None
    return info if _is_our_server(int(info.get("pid", -1))) else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure(home: Path | None = None, timeout_s: float | None = None) -> str:
    """The API URL of ``home``'s local server, starting it in the background when none is running."""
    home = home or prefect_home()
    with file_lock(home / LOCK_FILE):  # one call at a time decides whether to start the server
        info = running(home)
        if info is not None and _healthy(info["url"]):
            return str(info["url"])
        if info is not None:  # alive but not answering: replace it
            stop(home)
        port = _free_port()
        url = f"http://127.0.0.1:{port}/api"
        log = home / LOG_FILE
        env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
        env["PREFECT_HOME"] = str(home)
        env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "prefect",
                    "server",
                    "start",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # outlives this call; stopped by pid (= process group)
            )
        write_json_atomic(home / STATE_FILE, {"pid": proc.pid, "url": url, "log": str(log)})
        print(f"emotalker: starting a local Prefect server for {home} (first use) ...", file=sys.stderr)
        limit = timeout_s or float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", 180))
        deadline = time.monotonic() + limit
        while not _healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                stop(home)
                raise LocalServerError(
                    f"the local Prefect server did not start within {limit:.0f} s; see {log}"
                )
            time.sleep(0.25)
        print(
            f"emotalker: Prefect UI at {url[: -len('/api')]}; the server stays up for later calls "
            "(`emotalker server stop` ends it)",
            file=sys.stderr,
        )
        return url


def stop(home: Path | None = None, wait_s: float = 15.0) -> int | None:
    """Stop ``home``'s local server by its recorded pid (its process group); returns the pid or None."""
    home = home or prefect_home()
    state = home / STATE_FILE
    info = running(home)
    state.unlink(missing_ok=True)
    if info is None:
        return None
    pid = int(info["pid"])
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    try:
        psutil.Process(pid).wait(wait_s)
    except psutil.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    except psutil.NoSuchProcess:
        pass
    return pid


def configured_api_url() -> str | None:
    """The Prefect API URL the user (environment, profile) or an active test harness set, if any."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


@contextlib.contextmanager
def api_for_cli() -> Iterator[str]:
    """Run the body against the configured Prefect API, else against this home's local server."""
    url = configured_api_url()
    if url is not None:
        yield url
        return
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url = ensure()
    os.environ["PREFECT_API_URL"] = url  # subprocesses (Dask workers) report to the same server
    try:
        with temporary_settings(updates={PREFECT_API_URL: url}):
            yield url
    finally:
        os.environ.pop("PREFECT_API_URL", None)
