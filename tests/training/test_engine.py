"""A new training stage is one module plus one registration: a toy stage, declared here and registered,
runs through the engine like the paper's three (train, register with its data fingerprints, skip when
finished, resume after a kill) and loads back through the model registry."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from prefect import flow
from torch import nn
from torch.utils.data import Dataset

from emotalker.configs.fingerprint import fingerprint
from emotalker.configs.schema import PipelineConfig, TrainStageConfig
from emotalker.storage.workspace import Workspace
from emotalker.tasks.training import stages
from emotalker.tasks.training.checkpoint import load_checkpoint
from emotalker.tasks.training.data import ckpt_dir, split_hash
from emotalker.tasks.training.engine import Stage, StagePlan, run_stage
from emotalker.tasks.training.registry import (
    METRIC_DIGEST,
    data_fingerprints,
    load_registered,
    metric_definition,
    metric_digest,
)
from emotalker_testkit.pipeline import training_config


class Line(Dataset):
    """y = 2x - 1 on a few points: a stage's whole dataset."""

    def __init__(self, n: int) -> None:
        self.x = torch.linspace(-1, 1, n)[:, None]

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "y": 2 * self.x[i] - 1}


def _loss(model: nn.Module, batch: dict[str, Any], step: int) -> tuple[torch.Tensor, dict[str, float]]:
    loss = ((model(batch["x"]) - batch["y"]) ** 2).mean()
    return loss, {"loss": loss.item()}


def _validate(model: nn.Module, batches: Any) -> dict[str, float]:
    errs = [float(((model(b["x"]) - b["y"]) ** 2).mean()) for b in batches]
    return {"val/loss": sum(errs) / len(errs)}


def _toy_plan(cfg: PipelineConfig, *, ws: Workspace, width: int = 1) -> StagePlan:
    """The toy stage's module: datasets, fingerprint, builder, loss, validation and model config."""
    hparams = TrainStageConfig(
        steps=12, batch_size=4, lr=1e-2, warmup_steps=1, checkpoint_every=4, log_every=2, val_every=4
    )
    return StagePlan(
        hparams=hparams,
        fingerprint=fingerprint("toy-v1", width, hparams.model_dump(), split_hash(ws)),
        data=(Line(16), Line(4)),
        build=lambda: (nn.Linear(width, 1), _loss, _validate),
        model_config=lambda model: {"model": {"in_features": model.in_features}},
    )


@pytest.fixture
def toy_stage() -> Iterator[Stage]:
    """The one registration line a new stage adds (to ``tasks/training/stages.py``)."""
    stage = stages.register(
        Stage(
            name="toy",
            families=(),
            description="Toy stage: y = 2x - 1 (tests).",
            plan=_toy_plan,
            metric_keys=("transformer.contrastive_temperature",),  # what its val/loss depends on
        )
    )
    yield stage
    stages.unregister("toy")


@flow(name="train-toy")
def train_toy(cfg: PipelineConfig, stop_after: int | None = None) -> dict[str, Any]:
    ws = Workspace.from_paths(cfg.paths)  # what a flow builds once and hands to the engine
    return run_stage(cfg, stages.STAGES["toy"], ws=ws, stop_after=stop_after, width=1)


def _config(root: Path) -> PipelineConfig:
    return training_config(root, "train.cpu_threads=1")


def test_the_builtin_stages_are_registered_once_in_training_order() -> None:
    assert list(stages.STAGES) == ["vqvae", "lip", "transformer"]
    assert {s: st.families for s, st in stages.STAGES.items()} == {
        "vqvae": ("face",),
        "lip": ("face", "mel"),
        "transformer": ("face", "hubert_emotion", "tokens"),
    }
    with pytest.raises(ValueError, match="already registered"):
        stages.register(stages.STAGES["lip"])


def test_a_registered_toy_stage_trains_registers_resumes_and_skips(
    tmp_path: Path, prefect_server: None, toy_stage: Stage
) -> None:
    cfg = _config(tmp_path)
    before = torch.get_num_threads()
    try:
        killed = train_toy(cfg, stop_after=6)
        assert killed["status"] == "interrupted" and killed["steps"] == 6
        out = train_toy(cfg)
    finally:
        torch.set_num_threads(before)
    assert out["stage"] == "toy" and out["steps"] == 12 and out["resumed_from"] == 4
    assert out["run_id"] == killed["run_id"]  # resumed into the same MLflow run
    ws = Workspace.from_paths(cfg.paths)
    fp = _toy_plan(cfg, ws=ws).fingerprint
    assert out["checkpoint_dir"] == str(ckpt_dir(cfg, "toy", fp))
    assert out["registered"]["name"] == "emotalker-toy" and out["registered"]["alias_moved"] is True
    assert data_fingerprints(ws, "toy") == {"split": split_hash(ws)}  # no feature families

    state, model_config, version, _ = load_registered(cfg, "toy", ws=ws)
    assert (
        model_config == {"model": {"in_features": 1}} and str(version.version) == out["registered"]["version"]
    )
    assert version.tags[METRIC_DIGEST] == metric_digest(metric_definition(cfg, toy_stage.metric_keys))
    best = load_checkpoint(Path(out["checkpoint_dir"]) / "best.pt")["model"]  # the registered weights
    assert state.keys() == best.keys() and all(torch.equal(state[k], best[k]) for k in best)

    again = train_toy(cfg)
    assert again["skipped"] is True and again["run_id"] == out["run_id"]


def _lose_database(db: Path) -> None:
    """Delete the MLflow database as a user would between commands: this process's pooled connections
    (which keep the deleted file open) go too, as they would with a new process."""
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as RegistryStore
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as TrackingStore
    from mlflow.tracking._model_registry.registry import ModelRegistryStoreRegistry
    from mlflow.tracking._tracking_service.registry import TrackingStoreRegistry

    db.unlink()
    TrackingStoreRegistry._get_store_with_resolved_uri.cache_clear()
    ModelRegistryStoreRegistry._get_store_with_resolved_uri.cache_clear()
    for store in (TrackingStore, RegistryStore):
        with store._engine_map_lock:
            for engine in store._engine_map.values():
                engine.dispose()
            store._engine_map.clear()


def test_a_lost_mlflow_database_is_not_a_dead_end(
    tmp_path: Path, prefect_server: None, toy_stage: Stage, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 30 case 9: with the MLflow database deleted, a finished stage's ``done.json`` no longer
    counts: the rerun says so, registers the checkpoint again (same weights) and the model loads."""
    cfg = _config(tmp_path)
    before = torch.get_num_threads()
    try:
        out = train_toy(cfg)
        _lose_database(tmp_path / "mlflow.db")
        with caplog.at_level("WARNING"):
            again = train_toy(cfg)
    finally:
        torch.set_num_threads(before)
    assert "skipped" not in again and again["registered"]["version"] == "1"
    assert again["steps"] == out["steps"] == 12 and again["run_id"] != out["run_id"]
    assert "is not in the registry" in caplog.text and "re-registering" in caplog.text
    state, _, version, _ = load_registered(cfg, "toy", ws=Workspace.from_paths(cfg.paths))
    best = load_checkpoint(Path(out["checkpoint_dir"]) / "best.pt")["model"]
    assert all(torch.equal(state[k], best[k]) for k in best)
    assert train_toy(cfg)["skipped"] is True  # registered again: a no-op rerun
