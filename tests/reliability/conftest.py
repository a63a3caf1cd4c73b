"""Shared fixtures for the reliability suite: one Prefect server, one tiny fully-run reference root.

The reference root (2 actors x 2 emotions x 2 levels, tiny models) is produced in-process by the same
flows the CLI runs; kill tests copy the part of it a flow needs into a fresh root, kill that flow in a
subprocess, rerun it and compare against the reference.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from emotalker_testkit.deployments import PREFECT, run_command
from emotalker_testkit.reliability import CONFIG, REPO, CliRun, subprocess_env, tiny_overrides


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Callable[..., CliRun]]:
    """Start CLI subprocesses; every one is killed (by process group id) at teardown."""
    runs: list[CliRun] = []
    home = tmp_path / "prefect-home"
    home.mkdir()

    def start(*args: str) -> CliRun:
        run = CliRun(list(args), home, tmp_path / f"cli-{len(runs)}.log")
        runs.append(run)
        return run

    yield start
    for run in runs:
        run.kill()
    from emotalker.flows.local_server import stop

    stop(home)  # a CLI run without the test server's URL would have started this home's local server


@pytest.fixture(scope="session")
def reference(prefect_server: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The tiny pipeline run once, uninterrupted: the outputs every kill test must reproduce."""
    from emotalker.configs.schema import load_config
    from emotalker.flows.demo import demo_data_flow
    from emotalker.flows.featurize import audio_features_flow, face_features_flow
    from emotalker.flows.ingest import download_flow, prepare_flow
    from emotalker.flows.train import train_lip, train_transformer, train_vqvae

    root = tmp_path_factory.mktemp("reference")
    ov = tiny_overrides(root)
    out: dict[str, Any] = {"root": root, "overrides": ov, "cfg": load_config(CONFIG, ov)}
    timings = {}
    for name, fn in (
        ("demo", demo_data_flow),
        ("download", download_flow),
        ("prepare", prepare_flow),
        ("face", face_features_flow),
        ("audio", audio_features_flow),
        ("vqvae", train_vqvae),
        ("lip", train_lip),
        ("transformer", train_transformer),
    ):
        t0 = time.monotonic()
        out[name] = fn(CONFIG, ov)
        timings[name] = round(time.monotonic() - t0, 1)
    out["timings"] = timings
    print("reference timings", timings)
    return out


@pytest.fixture(scope="session")
def deployed(prefect_server: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """prefect.yaml's ``reproduce/demo`` deployed to the test server's ``emotalker`` process pool with the
    real ``prefect deploy``; ``env`` is what a ``prefect`` command or worker needs to reach it."""
    from prefect.settings import PREFECT_API_URL

    home = tmp_path_factory.mktemp("deploy-home")
    # the pull step runs flows from this checkout; a worker looks for runs every second
    env = {**subprocess_env(home), "EMOTALKER_HOME": str(REPO), "PREFECT_WORKER_QUERY_SECONDS": "1"}
    run_command([PREFECT, "work-pool", "create", "emotalker", "--type", "process"], env)
    run_command([PREFECT, "deploy", "--name", "reproduce/demo"], env, timeout=300)
    return {"env": env, "api": str(PREFECT_API_URL.value())}
