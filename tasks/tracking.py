"""MLflow bookkeeping for training stages: runs that resume, params, artifacts, registry aliases.

Models are registered twice over in one version: an ``mlflow.pytorch`` pickle model (reloads for any
batch size; no torch.export) and, beside it, ``weights.safetensors`` + ``model_config.json`` which the
pipeline itself reloads without unpickling anything.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from emotalker.configs.schema import PipelineConfig, dump_config
from emotalker.configs.secrets import redact_secrets
from emotalker.storage.workspace import Workspace

# MLflow 3's experiment kind: without it the UI opens a new experiment in its GenAI (traces) view
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"

# the description (mlflow.note.content) each run carries, shown on its overview page (a training
# stage's is its ``Stage.description``)
RUN_DESCRIPTIONS = {
    "evaluate": "Test split generated from audio + neutral reference; Table 1 metrics, per-clip numbers and "
    "the HTML report under evaluation/.",
    "reproduce": "The full reproduction: one nested run per training stage and the evaluation; the Table 1 "
    "comparison is the table evaluation/table1.json.",
}


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


def config_params(cfg: PipelineConfig) -> dict[str, str]:
    """Every config value as an MLflow param (a validated config holds no credentials; masked anyway)."""
    params = {}
    for k, v in flatten(cfg.model_dump(mode="json")).items():
        text = json.dumps(v) if isinstance(v, list | dict) else str(v)
        params[k] = redact_secrets(text)[:6000]
    return params


def artifact_location(cfg: PipelineConfig) -> str | None:
    """Artifact root for a new experiment: the configured one, else ``mlartifacts/`` beside a sqlite file.

    Without it MLflow puts a sqlite-tracked experiment's artifacts in ``./mlruns`` of the current working
    directory, so runs started from different directories (a worker, a test) would scatter them.
    """
    m = cfg.mlflow
    if m.artifact_location:
        loc = m.artifact_location
        return Path(loc).expanduser().resolve().as_uri() if "://" not in loc else loc
    prefix = "sqlite:///"
    if m.tracking_uri.startswith(prefix) and ":memory:" not in m.tracking_uri:
        db = Path(m.tracking_uri[len(prefix) :]).expanduser()
        return (db.resolve().parent / "mlartifacts").as_uri()
    return None  # a tracking server or file store decides


def setup_mlflow(cfg: PipelineConfig) -> str:
    """Point MLflow at the configured tracking URI and experiment (created with its artifact location)."""
    mlflow.set_tracking_uri(cfg.mlflow.tracking_uri)
    name = cfg.mlflow.experiment
    kind = {EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
    if mlflow.get_experiment_by_name(name) is None:
        try:
            mlflow.create_experiment(name, artifact_location=artifact_location(cfg), tags=kind)
        except MlflowException:  # created meanwhile by a concurrent flow
            if mlflow.get_experiment_by_name(name) is None:
                raise
    exp = mlflow.set_experiment(name)
    if exp.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:  # created before the kind was set
        MlflowClient().set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return exp.experiment_id


def describe_run(name: str) -> None:
    """Give the active ``evaluate`` or ``reproduce`` run its description (``mlflow.note.content``)."""
    note_run(RUN_DESCRIPTIONS[name])


def note_run(description: str) -> None:
    """The active run's description (``mlflow.note.content``), shown on its overview page."""
    mlflow.set_tag("mlflow.note.content", description)


def log_data_inputs(ws: Workspace, context: str) -> None:
    """The clip manifest and the split as the active run's dataset inputs (name, digest, schema, source)."""
    import mlflow.data
    import pandas as pd

    manifest_path, split_path = ws.manifest_path, ws.split_path
    if manifest_path.exists():
        rows = pd.DataFrame(ws.manifest().records())
        keep = [c for c in ("clip_id", "actor", "emotion", "level", "n_frames", "status") if c in rows]
        ds = mlflow.data.from_pandas(rows[keep], source=str(manifest_path), name="manifest")
        mlflow.log_input(ds, context=context)
    if split_path.exists():
        split = json.loads(split_path.read_text())
        pairs = [(c, part) for part in ("train", "val", "test") for c in split.get(part, [])]
        frame = pd.DataFrame(pairs, columns=["clip_id", "split"])
        mlflow.log_input(
            mlflow.data.from_pandas(frame, source=str(split_path), name="split"), context=context
        )


def _existing_run(run_file: Path) -> str | None:
    if not run_file.is_file():
        return None
    run_id = json.loads(run_file.read_text()).get("run_id")
    try:
        run = MlflowClient().get_run(run_id)
    except MlflowException:
        return None
    return run_id if run.info.lifecycle_stage == "active" else None


@contextmanager
def stage_run(
    cfg: PipelineConfig,
    stage: str,
    run_file: Path,
    parent_run_id: str | None = None,
    extra_artifacts: dict[str, Path] | None = None,
    *,
    ws: Workspace,
    description: str,
) -> Iterator[mlflow.ActiveRun]:
    """One MLflow run per stage; a resumed stage (same ``run_file``) continues the same run.

    ``description`` is the run's note (``mlflow.note.content``): what the stage trains and plots.
    """
    setup_mlflow(cfg)
    run_id = _existing_run(run_file)
    kwargs: dict[str, Any] = {"log_system_metrics": True}
    if run_id:
        kwargs["run_id"] = run_id
    else:
        kwargs["run_name"] = f"{cfg.name}-{stage}"
        if parent_run_id:
            kwargs["parent_run_id"] = parent_run_id
            active = mlflow.active_run()
            kwargs["nested"] = active is not None and active.info.run_id == parent_run_id
    os.environ.setdefault("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "5")
    with mlflow.start_run(**kwargs) as run:
        if not run_id:
            run_file.parent.mkdir(parents=True, exist_ok=True)
            run_file.write_text(json.dumps({"run_id": run.info.run_id}))
            mlflow.set_tags({"stage": stage, "pipeline": cfg.name})
            note_run(description)
            mlflow.log_params(config_params(cfg))
            log_data_inputs(ws, context="training")
            with tempfile.TemporaryDirectory() as tmp:
                resolved = dump_config(cfg, Path(tmp) / "config.yaml")
                resolved.write_text(redact_secrets(resolved.read_text()))  # no credentials in artifacts
                mlflow.log_artifact(str(resolved), "config")
            for name, path in (extra_artifacts or {}).items():
                if path.exists():
                    mlflow.log_artifact(str(path), name)
        yield run
        _ensure_system_sample(run.info.run_id)


def _ensure_system_sample(run_id: str) -> None:
    """Log one CPU/memory/disk sample when the run ended before MLflow's sampler took its first one.

    MLflow samples system metrics every ``MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL`` seconds (5 here), so a
    stage shorter than that (tiny configs, a resumed run near its end) would otherwise record none.
    """
    if any(k.startswith("system/") for k in MlflowClient().get_run(run_id).data.metrics):
        return
    try:
        from mlflow.system_metrics.metrics.cpu_monitor import CPUMonitor
        from mlflow.system_metrics.metrics.disk_monitor import DiskMonitor
    except ImportError:  # internal module moved in another MLflow version: nothing to add
        return
    sample: dict[str, float] = {}
    for monitor in (CPUMonitor(), DiskMonitor()):
        monitor.collect_metrics()
        sample.update(monitor.aggregate_metrics())
    mlflow.log_metrics({f"system/{k}": float(v) for k, v in sample.items()}, step=0)


def metric_sink(metrics: dict[str, float], step: int) -> None:
    """Log finite metrics (MLflow keys allow '/', which groups them in the UI)."""
    clean = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
    if clean:
        mlflow.log_metrics(clean, step=step)


def download_stage_plots(
    tracking_uri: str, registered_names: dict[str, str], versions: dict[str, str], dest: Path
) -> dict[str, Path]:
    """The ``plots/`` folder of each stage's registered ``versions`` run, by stage; stages without one are
    left out."""
    client = MlflowClient(tracking_uri)
    out: dict[str, Path] = {}
    for stage, name in registered_names.items():
        try:
            run_id = client.get_model_version(name, versions[stage]).run_id
            out[stage] = Path(
                mlflow.artifacts.download_artifacts(
                    run_id=run_id,
                    artifact_path="plots",
                    dst_path=str(dest / stage),
                    tracking_uri=tracking_uri,
                )
            )
        except (MlflowException, KeyError):
            continue
    return out
