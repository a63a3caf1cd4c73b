"""Where MLflow keeps a pipeline experiment's artifacts."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from emotalker.configs.schema import load_config
from emotalker.storage.workspace import Workspace
from emotalker.tasks.tracking import artifact_location, setup_mlflow


def _cfg(*overrides: str):  # type: ignore[no-untyped-def]
    return load_config(None, list(overrides))


def test_sqlite_experiment_keeps_artifacts_beside_the_database_not_in_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    cfg = _cfg(f"mlflow.tracking_uri=sqlite:///{tmp_path}/db/mlflow.db", "mlflow.experiment=loc-test")
    (tmp_path / "db").mkdir()
    exp_id = setup_mlflow(cfg)
    try:
        with mlflow.start_run(experiment_id=exp_id) as run:
            mlflow.log_text("hello", "notes/hello.txt")
        stored = MlflowClient().get_experiment(exp_id).artifact_location
        assert stored == (tmp_path / "db" / "mlartifacts").as_uri()
        assert (tmp_path / "db" / "mlartifacts" / run.info.run_id / "artifacts/notes/hello.txt").is_file()
        assert not (cwd / "mlruns").exists()
        assert setup_mlflow(cfg) == exp_id  # a second setup reuses the experiment
    finally:
        mlflow.set_tracking_uri(None)


def test_artifact_location_rules(tmp_path: Path) -> None:
    own = _cfg(f"mlflow.artifact_location={tmp_path}/art")
    assert artifact_location(own) == (tmp_path / "art").as_uri()
    assert artifact_location(_cfg("mlflow.artifact_location=s3://bucket/runs")) == "s3://bucket/runs"
    assert artifact_location(_cfg("mlflow.tracking_uri=http://127.0.0.1:5000")) is None  # the server's
    rel = artifact_location(_cfg("mlflow.tracking_uri=sqlite:///data/x/mlflow.db"))
    assert rel == (Path.cwd() / "data/x/mlartifacts").as_uri()


def test_experiments_are_model_training_experiments_with_described_runs_and_data_inputs(
    tmp_path: Path,
) -> None:
    import json

    from emotalker.storage.manifest import Manifest
    from emotalker.tasks.tracking import (
        EXPERIMENT_KIND,
        EXPERIMENT_KIND_TAG,
        RUN_DESCRIPTIONS,
        describe_run,
        log_data_inputs,
    )

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cfg = _cfg(f"mlflow.tracking_uri={uri}", "mlflow.experiment=kind-test", f"paths.root={tmp_path}/root")
    try:
        mlflow.set_tracking_uri(uri)
        old = mlflow.create_experiment("kind-test")  # made before the kind existed: upgraded in place
        assert setup_mlflow(cfg) == old
        assert MlflowClient().get_experiment(old).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
        fresh = setup_mlflow(_cfg(f"mlflow.tracking_uri={uri}", "mlflow.experiment=kind-new"))
        assert MlflowClient().get_experiment(fresh).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
        root = cfg.paths.resolve("manifest").parent
        root.mkdir(parents=True)
        rows = [
            {
                "clip_id": c,
                "actor": c[:4],
                "view": "front",
                "emotion": "angry",
                "level": 1,
                "sentence": "001",
                "status": "prepared",
                "n_frames": 5,
            }
            for c in ("M003_a", "W009_b")
        ]
        Manifest(cfg.paths.resolve("manifest")).upsert(rows)
        cfg.paths.resolve("split").write_text(
            json.dumps({"train": ["W009_b"], "val": [], "test": ["M003_a"]})
        )
        with mlflow.start_run(experiment_id=old) as run:
            describe_run("evaluate")
            log_data_inputs(Workspace.from_paths(cfg.paths), context="training")
        got = MlflowClient().get_run(run.info.run_id)
        assert got.data.tags["mlflow.note.content"] == RUN_DESCRIPTIONS["evaluate"]
        inputs = {i.dataset.name: i for i in got.inputs.dataset_inputs}
        assert set(inputs) == {"manifest", "split"}
        assert {t.key: t.value for t in inputs["split"].tags}["mlflow.data.context"] == "training"
        assert json.loads(inputs["split"].dataset.profile)["num_rows"] == 2
    finally:
        mlflow.set_tracking_uri(None)
