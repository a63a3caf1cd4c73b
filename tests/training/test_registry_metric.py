"""The registry alias compares validation metrics only between versions with the same metric definition:
a contrastive loss at temperature 0.1 is on another scale than at 1.0, so its lower value is no better."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from torch import nn

from emotalker.configs.schema import PipelineConfig
from emotalker.storage.workspace import Workspace
from emotalker.tasks.training import stages
from emotalker.tasks.training.engine import Stage, run_stage
from emotalker.tasks.training.registry import (
    METRIC_DIGEST,
    choose_version,
    data_fingerprints,
    log_and_register,
    metric_definition,
    metric_digest,
    registered_name,
)
from emotalker_testkit.pipeline import training_config

KEYS = stages.STAGES["transformer"].metric_keys


def _config(root: Path, *overrides: str) -> PipelineConfig:
    return training_config(root, *overrides)


@pytest.fixture
def toy_stage() -> Iterator[Stage]:
    """A stage without feature families that validates like the transformer (its metric keys)."""
    stage = stages.register(
        Stage(name="toy", families=(), description="toy", plan=lambda cfg, *, ws: None, metric_keys=KEYS)
    )
    yield stage
    stages.unregister("toy")


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Path]:
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    mlflow.set_experiment("metric-digest")
    try:
        yield tmp_path
    finally:
        mlflow.set_tracking_uri(None)


def _register(cfg: PipelineConfig, metric: float) -> dict:
    """What ``engine.finish`` registers for a toy version trained under ``cfg`` with ``metric``."""
    ws = Workspace.from_paths(cfg.paths)
    with mlflow.start_run():
        return log_and_register(
            nn.Linear(1, 1),
            {"model": {}},
            registered_name=registered_name(cfg, "toy"),
            metric=metric,
            alias=cfg.train.model_alias,
            data=data_fingerprints(ws, "toy"),
            metric_def=metric_definition(cfg, KEYS),
        )


def _best(cfg: PipelineConfig) -> str:
    return str(MlflowClient().get_model_version_by_alias(registered_name(cfg, "toy"), "best").version)


def test_a_lower_loss_at_another_contrastive_temperature_does_not_take_best(
    registry: Path, toy_stage: Stage, caplog: pytest.LogCaptureFixture
) -> None:
    warm = _config(registry, "transformer.contrastive_temperature=1.0")
    cold = _config(registry, "transformer.contrastive_temperature=0.1")
    first = _register(warm, 3.16)
    assert first["alias_moved"] is True
    with caplog.at_level(logging.WARNING, logger="emotalker.tasks.training.registry"):
        second = _register(cold, 2.39)
    d_warm, d_cold = (metric_digest(metric_definition(c, KEYS)) for c in (warm, cold))
    assert d_warm != d_cold
    assert second["alias_moved"] is False and _best(cold) == first["version"]
    reason = second["alias_reason"]
    assert d_warm in reason and d_cold in reason
    assert "transformer.contrastive_temperature 1.0 -> 0.1" in reason and "not comparable" in reason
    assert "transformer.contrastive_weight" not in reason  # only the keys that differ
    lines = [r.getMessage() for r in caplog.records if "stays at version" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0] and d_warm in lines[0] and d_cold in lines[0]
    tags = MlflowClient().get_model_version(registered_name(cold, "toy"), second["version"]).tags
    assert tags[METRIC_DIGEST] == d_cold
    # --model best still resolves to the holder: trained on these stores, usable whatever the loss was
    ws = Workspace.from_paths(cold.paths)
    assert str(choose_version(cold, "toy", "best", ws=ws).version) == first["version"]
    assert str(choose_version(cold, "toy", ws=ws).version) == second["version"]  # current: the newest


def test_the_same_metric_definition_still_compares_val_metrics(registry: Path, toy_stage: Stage) -> None:
    cfg = _config(registry, "transformer.contrastive_temperature=0.1")
    first = _register(cfg, 3.0)
    worse = _register(cfg, 3.5)
    assert worse["alias_moved"] is False and "val metric 3.5 vs version" in worse["alias_reason"]
    better = _register(
        _config(registry, "transformer.contrastive_temperature=0.1", "train.transformer.lr=3e-4"), 2.0
    )
    assert better["alias_moved"] is True and _best(cfg) == better["version"] != first["version"]


def test_a_holder_without_a_recorded_definition_is_not_compared(registry: Path, toy_stage: Stage) -> None:
    cfg = _config(registry)
    old = _register(cfg, 3.0)
    MlflowClient().delete_model_version_tag(registered_name(cfg, "toy"), old["version"], METRIC_DIGEST)
    new = _register(cfg, 1.0)  # registered before metric digests: its loss definition is unknown
    assert new["alias_moved"] is False and "unrecorded" in new["alias_reason"]


def test_options_outside_the_metric_definition_keep_the_digest(tmp_path: Path) -> None:
    base = _config(tmp_path)
    digest = {
        name: metric_digest(metric_definition(base, stage.metric_keys))
        for name, stage in stages.STAGES.items()
    }
    other = _config(
        tmp_path,
        "train.transformer.log_every=7",
        "train.lip.val_every=13",
        "train.vqvae.checkpoint_every=11",
        "mlflow.experiment=elsewhere",
        "transformer.dropout=0.3",
        "vqvae.emotion_weight=0.5",  # a training loss weight that val/loss (raw recon MSE) does not contain
    )
    for name, stage in stages.STAGES.items():
        assert metric_digest(metric_definition(other, stage.metric_keys)) == digest[name], name
    for name, override in [
        ("transformer", "transformer.contrastive_weight=0.5"),
        ("transformer", "transformer.use_contrastive=false"),
        ("transformer", "train.transformer.reference=window_frame"),
        ("lip", "train.lip.reference=clip_frame"),
    ]:
        changed = _config(tmp_path, override)
        assert metric_digest(metric_definition(changed, stages.STAGES[name].metric_keys)) != digest[name]


def test_a_misspelt_metric_key_fails_before_training(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    stage = Stage(
        name="typo",
        families=(),
        description="typo",
        plan=lambda cfg, *, ws: None,
        metric_keys=("transformer.contrastive_temprature",),
    )
    with pytest.raises(
        ValueError, match=r"^metric definition key 'transformer.contrastive_temprature' is not"
    ):
        run_stage(cfg, stage, ws=Workspace.from_paths(cfg.paths))
