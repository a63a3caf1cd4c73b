"""Training flows, one per stage, each one MLflow run (nested under ``reproduce`` when called from it).

A stage reruns as a no-op when its fingerprint (model + training config + inputs) already finished;
a killed stage resumes from its last checkpoint into the same MLflow run.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch
from prefect import get_run_logger
from torch.utils.data import Dataset

from emotalker.configs.fingerprint import file_signature, fingerprint
from emotalker.configs.schema import PipelineConfig, TrainStageConfig
from emotalker.flows.common import (
    CredentialFree,
    Overrides,
    pipeline_flow,
    resolve_config,
)
from emotalker.models.vqvae import MotionVQVAE
from emotalker.storage.shared import shared_file
from emotalker.tasks.training.checkpoint import load_checkpoint
from emotalker.tasks.training.loop import LossFn, TrainResult, ValFn, iterate_batches, run_training
from emotalker.tasks.training.plots import code_tsne, codebook_usage, loss_curves
from emotalker.tasks.training.registry import CURRENT, data_fingerprints, load_registered, registered_name
from emotalker.tasks.training.stages import (
    FaceNormalizer,
    TransformerObjective,
    build_lip,
    build_transformer,
    build_vqvae,
    ckpt_dir,
    content_centres,
    lip_datasets,
    lip_loss,
    lip_model_config,
    lip_validate,
    model_summary,
    transformer_datasets,
    vqvae_datasets,
    vqvae_loss,
    vqvae_validate,
)
from emotalker.tasks.training.tracking import (
    log_and_register,
    metric_sink,
    stage_run,
)

GPU_LIMIT = "gpu"


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


def _split_hash(cfg: PipelineConfig) -> str:
    return hashlib.sha256(shared_file(cfg.paths, "split").read_bytes()).hexdigest()[:12]


def _finish(
    cfg: PipelineConfig,
    stage: str,
    d: Path,
    model: torch.nn.Module,
    model_config: dict[str, Any],
    res: TrainResult,
    run_id: str,
    tags: dict[str, str] | None = None,
) -> dict[str, Any]:
    best = load_checkpoint(d / "best.pt")
    model.load_state_dict(best["model"])
    loss_curves(res.history, d / "loss_curves.png")
    mlflow.log_artifact(str(d / "loss_curves.png"), "plots")
    reg = log_and_register(
        model,
        model_config,
        registered_name(cfg, stage),
        res.best_metric,
        cfg.train.model_alias,
        data=data_fingerprints(cfg, stage),
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


def cpu_threads(cfg: PipelineConfig) -> int:
    """Training's CPU thread count: the configured one, else every core this process may use."""
    return cfg.train.cpu_threads or len(os.sched_getaffinity(0))


def _already_done(d: Path) -> dict[str, Any] | None:
    done = d / "done.json"
    if done.exists():
        return dict(json.loads(done.read_text()), skipped=True)
    return None


@dataclass
class StageSpec:
    """What differs between training stages; :func:`run_stage` does the rest the same way for each."""

    name: str  # checkpoint folder, MLflow run and registered model suffix
    hparams: TrainStageConfig  # cfg.train.<name>: steps, seed, batch size, ...
    fingerprint: str  # identifies a finished run: same fingerprint, same result
    data: tuple[Dataset, Dataset | None]  # train, val windows
    build: Callable[[], tuple[torch.nn.Module, LossFn, ValFn]]  # model, loss, validation; after seeding
    model_config: Callable[[torch.nn.Module], dict[str, Any]]  # registered beside the weights: rebuilds it
    params: dict[str, Any] = field(default_factory=dict)  # stage-specific MLflow params
    after: Callable[[torch.nn.Module, Path], None] | None = None  # extra artifacts in the stage's run
    tags: dict[str, str] | None = None  # on the registered model version


def run_stage(
    cfg: PipelineConfig, spec: StageSpec, parent_run_id: str | None, stop_after: int | None
) -> dict[str, Any]:
    """Train one stage: skip if its fingerprint finished, else resume/train in its MLflow run and register.

    Returns the stage summary (``done.json``), or ``status: interrupted`` when ``stop_after`` ended it early.
    """
    logger = get_run_logger()
    device = cfg.torch_device()
    d = ckpt_dir(cfg, spec.name, spec.fingerprint)
    if (done := _already_done(d)) is not None:
        logger.info("%s %s already trained: %s", spec.name, spec.fingerprint, d)
        return done
    torch.manual_seed(spec.hparams.seed)
    model, loss, validate = spec.build()
    train, val = spec.data
    summary = model_summary(model)
    logger.info(
        "%s: %d train windows, %d val windows, %s, device=%s",
        spec.name,
        len(train),
        len(val or []),
        summary,
        device,
    )
    split = shared_file(cfg.paths, "split")
    with (
        gpu_slot(device, cfg.train.gpu_slots),
        stage_run(cfg, spec.name, d / "run.json", parent_run_id, {"split": split}) as run,
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
            spec.hparams,
            d,
            device,
            val_set=val,
            val_fn=validate,
            val_key="val/loss",
            sink=metric_sink,
            stop_after=stop_after,
            threads=cpu_threads(cfg),
            desc=f"train-{spec.name}",
        )
        run_id = run.info.run_id
        if res.steps < spec.hparams.steps:
            return {"stage": spec.name, "status": "interrupted", "steps": res.steps, "run_id": run_id}
        result = _finish(cfg, spec.name, d, model, spec.model_config(model), res, run_id, spec.tags)
        if spec.after is not None:
            spec.after(model, d)
    return result


@pipeline_flow("train-vqvae")
def train_vqvae(
    config: CredentialFree = "configs/paper.yaml",
    overrides: Overrides = None,
    parent_run_id: str | None = None,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Stage 1: the motion VQ-VAE with emotion head on the 57 face coefficients (Eq. 3)."""
    cfg = resolve_config(config, overrides)
    train, val, norm = vqvae_datasets(cfg)  # fails fast on missing stores, empty split, bad widths
    spec = StageSpec(
        name="vqvae",
        hparams=cfg.train.vqvae,
        fingerprint=fingerprint(
            "vqvae-v1", cfg.vqvae.model_dump(), cfg.train.vqvae.model_dump(), _split_hash(cfg)
        ),
        data=(train, val),
        build=lambda: (build_vqvae(cfg), vqvae_loss, vqvae_validate),
        model_config=lambda _: {"model": cfg.vqvae.model_dump(), **norm.to_dict()},
        after=lambda model, d: _vqvae_plots(model, val or train, d, cfg.train.vqvae.batch_size),
    )
    return run_stage(cfg, spec, parent_run_id, stop_after)


def _vqvae_plots(model: MotionVQVAE, data: Any, d: Path, batch_size: int) -> None:
    """Codebook usage histogram and the t-SNE of codes coloured by their dominant emotion."""
    model.eval().cpu()
    k = model.quantizer.codebook_size
    per_emotion = np.zeros((8, k))
    with torch.inference_mode():
        for b in iterate_batches(data, batch_size):
            _, idx = model.encode(b["face"])
            for e in range(8):
                sel = b["label"] == e
                if sel.any():
                    per_emotion[e] += np.bincount(idx[sel].reshape(-1).numpy(), minlength=k)
    counts = per_emotion.sum(0)
    dominant = np.where(counts > 0, per_emotion.argmax(0), -1)
    mlflow.log_artifact(str(codebook_usage(counts, d / "codebook_usage.png")), "plots")
    codebook = model.quantizer.codebook.detach().cpu().numpy()
    mlflow.log_artifact(str(code_tsne(codebook, dominant, d / "codebook_tsne.png")), "plots")
    mlflow.log_metric("codebook/used_codes", float((counts > 0).sum()))


def load_vqvae(cfg: PipelineConfig, model: str = CURRENT) -> tuple[MotionVQVAE, FaceNormalizer, str]:
    """Stage-1 model (a version, ``current`` or an alias; see ``registry.choose_version``) and its sha."""
    state, mc, _, sha = load_registered(cfg, "vqvae", model)
    vqvae = MotionVQVAE(**mc["model"])
    vqvae.load_state_dict(state)
    norm = FaceNormalizer(np.asarray(mc["face_mean"], np.float32), np.asarray(mc["face_std"], np.float32))
    return vqvae.eval(), norm, sha


@pipeline_flow("train-transformer")
def train_transformer(
    config: CredentialFree = "configs/paper.yaml",
    overrides: Overrides = None,
    parent_run_id: str | None = None,
    stop_after: int | None = None,
    vqvae_version: str | None = None,
) -> dict[str, Any]:
    """Stage 2: the cross-modal Transformer over the frozen stage-1 codebook (Eq. 4-9).

    Args:
        vqvae_version: the stage-1 version to build on (``reproduce`` passes what ``train_vqvae``
            returned); None: the newest stage-1 version trained on the current face store and split.
    """
    cfg = resolve_config(config, overrides)
    vqvae, norm, vq_hash = load_vqvae(cfg, vqvae_version or CURRENT)
    train, val = transformer_datasets(cfg, norm)

    def build() -> tuple[torch.nn.Module, LossFn, ValFn]:
        model = build_transformer(cfg, vqvae)
        objective = TransformerObjective(vqvae)
        return model, objective, objective.validate

    spec = StageSpec(
        name="transformer",
        hparams=cfg.train.transformer,
        fingerprint=fingerprint(
            "transformer-v2",
            cfg.transformer.model_dump(),
            cfg.train.transformer.model_dump(),
            _split_hash(cfg),
            vq_hash,
            cfg.audio.kmeans_k,
            content_centres(cfg)[1] if cfg.transformer.use_content_tokens else None,
        ),
        data=(train, val),
        build=build,
        model_config=lambda model: {
            "model": {
                **cfg.transformer.model_dump(),
                "code_dim": vqvae.code_dim,
                "content_vocab": model.content_vocab,
                "content_dim": model.content_dim,
            },
            "vqvae_weights_sha": vq_hash,
        },
        params={"vqvae.weights_sha": vq_hash},
        tags={"vqvae_weights_sha": vq_hash},
    )
    return run_stage(cfg, spec, parent_run_id, stop_after)


@pipeline_flow("train-lip")
def train_lip(
    config: CredentialFree = "configs/paper.yaml",
    overrides: Overrides = None,
    parent_run_id: str | None = None,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Lip branch: mel windows + reference expression -> 13 lip coefficients (Eq. 10)."""
    cfg = resolve_config(config, overrides)
    init = cfg.lip.init_checkpoint
    spec = StageSpec(
        name="lip",
        hparams=cfg.train.lip,
        fingerprint=fingerprint(
            "lip-v2",
            lip_model_config(cfg),
            file_signature(init) if init is not None else None,
            cfg.train.lip.model_dump(),
            _split_hash(cfg),
        ),
        data=lip_datasets(cfg),
        build=lambda: (build_lip(cfg), lip_loss, lip_validate),
        model_config=lambda _: {"model": lip_model_config(cfg)},
    )
    return run_stage(cfg, spec, parent_run_id, stop_after)
