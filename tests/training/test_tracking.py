"""Where MLflow keeps a pipeline experiment's artifacts."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from emotalker.configs.schema import load_config
from emotalker.tasks.training.tracking import artifact_location, setup_mlflow


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
