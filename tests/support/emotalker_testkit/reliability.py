"""The reliability suite's tiny config and CLI subprocess runner (killed by process group)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from emotalker.tasks.demo.standins.demo_layout import demo_input_overrides, relocated_demo_overrides

CONFIG = "configs/demo.yaml"
REPO = Path(__file__).resolve().parents[3]


def tiny_overrides(root: Path, *extra: str) -> list[str]:
    """demo.yaml moved under ``root`` and shrunk to 2 actors x 2 emotions x 2 levels with tiny training."""
    return [
        *relocated_demo_overrides(root),
        "synthetic.actors=[M003, W009]",
        "synthetic.emotion_model_steps=0",  # no training actor: the stand-in stays random
        "synthetic.audio2exp_steps=0",
        "eval.methods=[]",  # the reliability cases need our row only, not Table 1's other rows
        "synthetic.emotions=[angry, happy]",
        # no neutral clip in this tiny set: the references come from the clips themselves (the neutral
        # default is pinned by tests/training/test_references.py)
        "train.transformer.reference=window_frame",
        "train.lip.reference=clip_frame",
        "synthetic.levels=[1, 3]",
        "synthetic.image_size=64",
        "data.test_actors=[M003]",
        "data.val_actors=[]",
        "data.workers=1",
        "dask.n_workers=1",
        "device=cpu",
        "train.vqvae.steps=40",
        "train.vqvae.window=16",
        "train.vqvae.batch_size=8",
        "train.vqvae.checkpoint_every=4",
        "train.transformer.steps=32",
        "train.transformer.window=16",
        "train.transformer.batch_size=4",
        "train.transformer.checkpoint_every=4",
        "train.lip.steps=24",
        "train.lip.window=4",
        "train.lip.batch_size=4",
        "train.lip.checkpoint_every=3",
        *extra,
    ]


def shared_inputs(reference: dict[str, Any]) -> list[str]:
    """Overrides pointing a new root at the reference's mirror and stand-in models (same fingerprints)."""
    return demo_input_overrides(reference["root"])


def subprocess_env(home: Path) -> dict[str, str]:
    """Environment for CLI subprocesses: the test Prefect server, an isolated home, no telemetry."""
    from prefect.settings import PREFECT_API_URL

    env = dict(os.environ)
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        MLFLOW_DISABLE_TELEMETRY="true",
        DO_NOT_TRACK="1",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        PYTHONUNBUFFERED="1",
    )
    url = PREFECT_API_URL.value()
    if url:
        env["PREFECT_API_URL"] = url
    return env


class CliRun:
    """``python -m emotalker.flows.cli ...`` in its own process group: a kill takes its Dask workers too."""

    def __init__(self, args: list[str], home: Path, log: Path) -> None:
        self.log = log
        self._fh = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "emotalker.flows.cli", *args],
            cwd=REPO,
            env=subprocess_env(home),
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole process group (the CLI and every worker it started)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)
        self._fh.close()

    def wait(self, timeout: float) -> int:
        try:
            rc = self.proc.wait(timeout=timeout)
        finally:
            self.kill()  # reap leftovers of the group either way
        return rc

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]


def kill_when(run: CliRun, ready: Callable[[], bool], delay_s: float, timeout_s: float = 240.0) -> None:
    """Wait until ``ready()`` (a file appeared), sleep ``delay_s``, then SIGKILL; fail if it already ended.

    A flow that finished before the kill point would make the test vacuous, so that is an error.
    """
    t0 = time.monotonic()
    while not ready():
        if not run.alive():
            pytest.fail(f"flow exited (rc={run.proc.returncode}) before the kill point:\n{run.output()}")
        if time.monotonic() - t0 > timeout_s:
            pytest.fail(f"kill point not reached in {timeout_s} s:\n{run.output()}")
        time.sleep(0.01)
    time.sleep(delay_s)
    if not run.alive():
        pytest.fail(
            f"flow exited (rc={run.proc.returncode}) before the kill at +{delay_s:.2f} s:\n{run.output()}"
        )
    run.kill()
