"""The training engine: one stage run, the same way for every stage.

A :class:`Stage` declares what differs (its feature families and how to plan a run: data, fingerprint,
model, loss, validation); :func:`run_stage` does the rest: skip a finished fingerprint, queue for the
GPU, train or resume in the stage's MLflow run, register the best checkpoint and write ``done.json``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import torch
from torch.utils.data import Dataset

from emotalker.configs.schema import PipelineConfig, TrainStageConfig
from emotalker.storage.workspace import Workspace
from emotalker.tasks.tracking import metric_sink, stage_run
from emotalker.tasks.training.checkpoint import load_checkpoint
from emotalker.tasks.training.data import ckpt_dir, model_summary
from emotalker.tasks.training.loop import LossFn, TrainResult, ValFn, run_training
from emotalker.tasks.training.plots import loss_curves
from emotalker.tasks.training.registry import (
    data_fingerprints,
    is_registered,
    log_and_register,
    metric_definition,
    registered_name,
)

GPU_LIMIT = "gpu"

log = logging.getLogger(__name__)  # an emotalker logger: its lines reach the Prefect flow run's log


@dataclass
class StagePlan:
    """One run of a stage, planned from the config (datasets built, inputs checked, fingerprint known)."""

    hparams: TrainStageConfig  # cfg.train.<name>: steps, seed, batch size, ...
    fingerprint: str  # identifies a finished run: same fingerprint, same result
    data: tuple[Dataset, Dataset | None]  # train, val windows
    build: Callable[[], tuple[torch.nn.Module, LossFn, ValFn]]  # model, loss, validation; after seeding
    model_config: Callable[[torch.nn.Module], dict[str, Any]]  # registered beside the weights: rebuilds it
    params: dict[str, Any] = field(default_factory=dict)  # stage-specific MLflow params
    after: Callable[[torch.nn.Module, Path], None] | None = None  # extra artifacts in the stage's run
    tags: dict[str, str] | None = None  # on the registered model version


@dataclass(frozen=True)
class Stage:
    """A training stage's declaration; registering it in ``stages.py`` is all the engine needs."""

    name: str  # checkpoint folder, MLflow run and registered model suffix
    families: tuple[str, ...]  # the feature families it trains on (its registered data fingerprints)
    description: str  # the MLflow run's note: what the stage trains and which plots it logs
    plan: Callable[..., StagePlan]  # (cfg, *, ws, **inputs) -> the run; fails fast on bad inputs
    # dotted config keys that define its validation metric (``val/loss``): loss terms, weights, temperature,
    # the validation's input condition. The registry alias compares only versions whose values agree.
    metric_keys: tuple[str, ...] = ()


def ensure_gpu_limit(slots: int) -> None:
    """Create the Prefect global concurrency limit ``gpu`` with ``slots`` slots unless it exists.

    An existing limit is left as the user set it (``prefect global-concurrency-limit update gpu ...``).
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(GPU_LIMIT)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=GPU_LIMIT, limit=slots)
                )
            except ObjectAlreadyExists:  # another stage created it first
                pass


@contextmanager
def gpu_slot(device: str, slots: int = 1) -> Iterator[None]:
    """Hold one slot of the Prefect global concurrency limit ``gpu`` while training on CUDA.

    Stages started at once (several workers, parallel deployments) queue for the GPU instead of sharing
    it; ``train.gpu_slots`` > 1 lets that many share one GPU when asked.
    """
    if not device.startswith("cuda"):
        yield
        return
    from prefect.concurrency.sync import concurrency

    ensure_gpu_limit(slots)
    with concurrency(GPU_LIMIT, occupy=1, strict=True, timeout_seconds=None):
        yield


def cpu_threads(cfg: PipelineConfig) -> int:
    """Training's CPU thread count: the configured one, else every core this process may use."""
    return cfg.train.cpu_threads or len(os.sched_getaffinity(0))


def already_done(d: Path, tracking_uri: str | None = None) -> dict[str, Any] | None:
    """The summary of a finished run in ``d`` (marked ``skipped``), None while it is not finished.

    With ``tracking_uri``, a run is finished only if the model version its ``done.json`` names is still
    in that registry (from the same MLflow run); when it is not (a lost or replaced MLflow database) it
    warns and the stage re-registers from its checkpoint (``finish`` rewrites ``done.json``).
    """
    done = d / "done.json"
    if not done.exists():
        return None
    summary = json.loads(done.read_text())
    reg = summary.get("registered") or {}
    if tracking_uri is not None and not is_registered(
        tracking_uri, reg.get("name", "?"), reg.get("version", "?"), summary.get("run_id")
    ):
        log.warning(
            "%s: %s version %s (run %s) is not in the registry at %s: re-registering it from its checkpoint",
            d,
            reg.get("name"),
            reg.get("version"),
            summary.get("run_id"),
            tracking_uri,
        )
        return None  # done.json stays until the new registration rewrites it
    return dict(summary, skipped=True)


def finish(
    cfg: PipelineConfig,
    stage: str,
    *,
    ws: Workspace,
    d: Path,
    model: torch.nn.Module,
    model_config: dict[str, Any],
    res: TrainResult,
    run_id: str,
    tags: dict[str, str] | None = None,
    metric_def: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Register the best checkpoint (tagged with its data fingerprints and the digest of ``metric_def``,
    see ``registry.metric_definition``) and write ``done.json``."""
    best = load_checkpoint(d / "best.pt")
    model.load_state_dict(best["model"])
    loss_curves(res.history, d / "loss_curves.png")
    mlflow.log_artifact(str(d / "loss_curves.png"), "plots")
    reg = log_and_register(
        model,
        model_config,
        registered_name=registered_name(cfg, stage),
        metric=res.best_metric,
        alias=cfg.train.model_alias,
        data=data_fingerprints(ws, stage),
        metric_def=metric_def,
        tags=tags,
    )
    mlflow.log_metrics({"best/val_metric": res.best_metric, "best/step": res.best_step})
    summary = {
        "stage": stage,
        "run_id": run_id,
        "steps": res.steps,
        "best_metric": res.best_metric,
        "best_step": res.best_step,
        "resumed_from": res.resumed_from,
        "final": res.final_metrics,
        "registered": reg,
        "checkpoint_dir": str(d),
    }
    (d / "done.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def run_stage(
    cfg: PipelineConfig,
    stage: Stage,
    *,
    ws: Workspace,
    parent_run_id: str | None = None,
    stop_after: int | None = None,
    **inputs: Any,
) -> dict[str, Any]:
    """Train one stage: skip if its fingerprint finished, else resume/train in its MLflow run and register.

    ``ws`` holds the stores, manifest and split the stage trains on (built once by the flow). ``inputs``
    go to the stage's ``plan`` (the transformer's ``vqvae_version``). Returns the stage summary
    (``done.json``), or ``status: interrupted`` when ``stop_after`` ended it early.
    """
    spec = stage.plan(cfg, ws=ws, **inputs)  # fails fast on missing stores, empty split, bad widths
    metric_def = metric_definition(cfg, stage.metric_keys)  # a misspelt key fails before training too
    logger = log
    device = cfg.torch_device()
    d = ckpt_dir(cfg, stage.name, spec.fingerprint)
    if (done := already_done(d, cfg.mlflow.tracking_uri)) is not None:
        logger.info("%s %s already trained: %s", stage.name, spec.fingerprint, d)
        return done
    torch.manual_seed(spec.hparams.seed)
    model, loss, validate = spec.build()
    train, val = spec.data
    summary = model_summary(model)
    logger.info(
        "%s: %d train windows, %d val windows, %s, device=%s",
        stage.name,
        len(train),
        len(val or []),
        summary,
        device,
    )
    with (
        gpu_slot(device, cfg.train.gpu_slots),
        stage_run(
            cfg,
            stage.name,
            d / "run.json",
            parent_run_id,
            {"split": ws.split_path},
            ws=ws,
            description=stage.description,
        ) as run,
    ):
        mlflow.log_params(
            {
                "data.train_windows": len(train),
                "data.val_windows": len(val or []),
                "model.parameters": summary["parameters"],
                "fingerprint": spec.fingerprint,
                **spec.params,
                "runtime.cpu_threads": cpu_threads(cfg),
            }
        )
        res = run_training(
            model,
            loss,
            train,
            stage=spec.hparams,
            ckpt_dir=d,
            device=device,
            val_set=val,
            val_fn=validate,
            val_key="val/loss",
            sink=metric_sink,
            stop_after=stop_after,
            threads=cpu_threads(cfg),
            desc=f"train-{stage.name}",
        )
        run_id = run.info.run_id
        if res.steps < spec.hparams.steps:
            return {"stage": stage.name, "status": "interrupted", "steps": res.steps, "run_id": run_id}
        result = finish(
            cfg,
            stage.name,
            ws=ws,
            d=d,
            model=model,
            model_config=spec.model_config(model),
            res=res,
            run_id=run_id,
            tags=spec.tags,
            metric_def=metric_def,
        )
        if spec.after is not None:
            spec.after(model, d)
    return result
