"""The full reproduction: every stage flow in order, under one parent MLflow run."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import mlflow
import pandas as pd
from prefect import get_run_logger

from emotalker.flows.common import (
    CredentialFree,
    Overrides,
    pipeline_flow,
    resolve_config,
)
from emotalker.flows.evaluate import evaluate_flow
from emotalker.flows.featurize import features_flow
from emotalker.flows.ingest import download_flow, prepare_flow
from emotalker.flows.train import train_lip, train_transformer, train_vqvae
from emotalker.storage.workspace import Workspace
from emotalker.tasks.tracking import config_params, describe_run, log_data_inputs, setup_mlflow
from emotalker.tasks.training.stages import STAGES

TABLE1_ARTIFACT = "evaluation/table1.json"


class StageClock:
    """Wall seconds of each stage flow, in run order (``make demo`` prints them; MLflow keeps them)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def run(self, name: str, flow: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return flow(*args, **kwargs)
        finally:
            self.seconds[name] = round(time.perf_counter() - t0, 1)


def _train(config: str, overrides: list[str] | None, parent_run_id: str, clock: StageClock) -> dict[str, Any]:
    """Stage 1, the lip branch, then stage 2 on the stage-1 version just trained (or reused)."""
    results = {
        "train_vqvae": clock.run("train_vqvae", train_vqvae, config, overrides, parent_run_id=parent_run_id)
    }
    results["train_lip"] = clock.run("train_lip", train_lip, config, overrides, parent_run_id=parent_run_id)
    vq = results["train_vqvae"].get("registered", {}).get("version")
    results["train_transformer"] = clock.run(
        "train_transformer",
        train_transformer,
        config,
        overrides,
        parent_run_id=parent_run_id,
        vqvae_version=vq,
    )
    return results


def _registered_version(result: dict[str, Any], stage: str) -> Any:
    """The registered version a training flow returned; a stage that did not finish fails the run."""
    reg = result.get("registered")
    if not reg:
        raise RuntimeError(f"train-{stage} did not finish ({result}); rerun reproduce")
    return reg["version"]


@pipeline_flow("reproduce")
def reproduce(
    config: CredentialFree = "configs/paper.yaml", overrides: Overrides = None, skip_download: bool = False
) -> dict[str, Any]:
    """MEAD download -> prepare -> features -> stage 1 -> lip branch -> stage 2 -> evaluation.

    Each child flow is idempotent, so rerunning ``reproduce`` after a crash redoes only what is missing.

    Args:
        skip_download: use the archives already under ``paths.root`` instead of downloading.
    """
    cfg = resolve_config(config, overrides)
    results: dict[str, Any] = {}
    clock = StageClock()
    if not skip_download and cfg.download.urls_file is not None:
        results["download"] = clock.run("download", download_flow, config, overrides)
    else:
        get_run_logger().info("download skipped (no download.urls_file or skip_download)")
    results["prepare"] = clock.run("prepare", prepare_flow, config, overrides)
    results["features"] = clock.run("features", features_flow, config, overrides)
    setup_mlflow(cfg)
    with mlflow.start_run(run_name=f"{cfg.name}-reproduce") as parent:
        mlflow.set_tags({"stage": "reproduce", "pipeline": cfg.name})
        describe_run("reproduce")
        mlflow.log_params(config_params(cfg))
        log_data_inputs(Workspace.from_paths(cfg.paths), context="training")
        pid = parent.info.run_id
        results |= _train(config, overrides, pid, clock)
        trained = {stage: _registered_version(results[f"train_{stage}"], stage) for stage in STAGES}
        results["evaluate"] = clock.run(
            "evaluate", evaluate_flow, config, overrides, parent_run_id=pid, model=trained
        )
        ev = results["evaluate"]
        mlflow.log_metrics({f"test/{k}": v for k, v in ev.items() if isinstance(v, int | float)})
        # the Table 1 comparison as an MLflow table (the run's "Evaluation"/artifact view shows it)
        mlflow.log_table(pd.DataFrame(ev["table"]), artifact_file=TABLE1_ARTIFACT)
        mlflow.log_metrics({f"seconds/{k}": v for k, v in clock.seconds.items()})
        results["mlflow_run_id"] = pid
    results["seconds"] = clock.seconds
    return results
