"""prefect.yaml's deployments on a real Prefect server: background services stopped by PID, the real
``prefect`` CLI, and a deployment run followed to its end through the Prefect REST API."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

from emotalker_testkit.reliability import REPO

BIN = Path(sys.executable).parent
PREFECT = str(BIN / "prefect")
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


class Services:
    """Background processes started by a test, each stopped by its PID (terminate, wait, kill)."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: dict[str, subprocess.Popen] = {}
        self.files: list[Any] = []

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 (closed in stop_all)
        # own process group (id = the child's PID): the worker's flow-run processes and the MLflow server's
        # uvicorn child are stopped with it
        proc = subprocess.Popen(
            argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.files.append(log)
        self.procs[name] = proc
        return proc

    def tail(self, name: str, chars: int = 4000) -> str:
        p = self.logs / f"{name}.log"
        return p.read_text(errors="replace")[-chars:] if p.exists() else ""

    @staticmethod
    def _signal(proc: subprocess.Popen, sig: int) -> None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass

    def stop_all(self) -> None:
        """Worker first, servers last; SIGTERM to each group, SIGKILL what is left after 20 s."""
        for proc in reversed(list(self.procs.values())):
            self._signal(proc, signal.SIGTERM)
        for proc in reversed(list(self.procs.values())):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
            self._signal(proc, signal.SIGKILL)  # stragglers in the group (a flow run, uvicorn)
        for f in self.files:
            f.close()


def wait_http(url: str, proc: subprocess.Popen, timeout: float, what: str, log: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited with {proc.returncode}:\n{log}")
        try:
            if requests.get(url, timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{what} did not answer {url} within {timeout} s")


def run_command(argv: list[str], env: dict[str, str], timeout: float = 180) -> str:
    """Run a command from the checkout; its stdout, after asserting it succeeded."""
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(argv)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def run_deployment(
    name: str, params: dict[str, Any], env: dict[str, str], api: str, svc: Services, timeout: float
) -> str:
    """`prefect deployment run NAME --params JSON`, then poll the Prefect API until the run is COMPLETED."""
    out = run_command([PREFECT, "deployment", "run", name, "--params", json.dumps(params)], env)
    match = re.search(r"UUID:\s*([0-9a-f-]{36})", out)
    assert match, out
    run_id = match.group(1)
    deadline = time.monotonic() + timeout
    state = None
    while time.monotonic() < deadline:
        state = requests.get(f"{api}/flow_runs/{run_id}", timeout=10).json()["state"]["type"]
        if state in TERMINAL:
            break
        assert svc.procs["worker"].poll() is None, svc.tail("worker")
        time.sleep(2)
    assert state == "COMPLETED", f"{name} ended {state}:\n{svc.tail('worker', 8000)}"
    return run_id
