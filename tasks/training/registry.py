"""Registered models: registering a trained stage, which version a command uses, and the one loader of a
registered checkpoint.

Every version carries the fingerprints of what it was trained on (the split file and, per feature family
the stage reads, the fingerprints of the split's clips in that store). A model is loaded only when they
match the stores now; the registry alias (``best``) is compared and moved only between versions trained
on the same data, features and split, since their validation losses are comparable only then, and with
the same metric definition (the digest of the config keys a stage's validation metric depends on: loss
weights, contrastive temperature, ...), since a loss on another scale is not a better or worse model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from emotalker.configs.schema import PipelineConfig
from emotalker.storage.split import load_split
from emotalker.storage.workspace import Workspace

if TYPE_CHECKING:
    from torch import nn

TAG_PREFIX = "data."
CURRENT = "current"
METRIC_DIGEST = "metric_digest"  # version tag: digest of the stage's metric definition
METRIC_DEFINITION = "metric_definition"  # version tag: that definition as JSON ({config key: value})

log = logging.getLogger(__name__)  # an emotalker logger: its lines reach the Prefect flow run's log


class ModelSelectionError(LookupError):
    """No usable registered model: none trained on these stores, or one trained on other data."""


def registered_name(cfg: PipelineConfig, stage: str) -> str:
    return f"{cfg.mlflow.registry_prefix}-{stage}"


def registry_cache(cfg: PipelineConfig) -> Path:
    """Where registered checkpoints are downloaded to (one folder per stage)."""
    return cfg.paths.resolve("checkpoints") / "registry-cache"


def data_fingerprints(ws: Workspace, stage: str) -> dict[str, str]:
    """What ``stage`` trains on, as it is in the stores now: the split file and each family's clips."""
    from emotalker.tasks.training.stages import STAGES  # the stage modules load through this module

    split_path = ws.split_path
    split = load_split(split_path)
    ids = sorted({*split["train"], *split["val"], *split["test"]})
    out = {"split": hashlib.sha256(split_path.read_bytes()).hexdigest()[:12]}
    for family in STAGES[stage].families:
        fps = ws.store(family).clip_fingerprints(ids)  # with storage_options
        blob = json.dumps(sorted(fps.items()), separators=(",", ":")).encode()
        out[family] = hashlib.sha256(blob).hexdigest()[:12]
    return out


def version_data(version: ModelVersion) -> dict[str, str]:
    return {k[len(TAG_PREFIX) :]: v for k, v in (version.tags or {}).items() if k.startswith(TAG_PREFIX)}


def data_tags(data: dict[str, str]) -> dict[str, str]:
    return {f"{TAG_PREFIX}{k}": v for k, v in data.items()}


def metric_definition(cfg: PipelineConfig, keys: tuple[str, ...]) -> dict[str, Any]:
    """The values of the dotted config ``keys`` a stage's validation metric depends on (its definition).

    Two versions' ``val_metric`` are comparable only when these agree; a key that is not in the config is
    refused, since a misspelt key would silently make every version comparable again.
    """
    out: dict[str, Any] = {}
    for key in keys:
        node: Any = cfg
        for part in key.split("."):
            if not hasattr(node, part):
                raise ValueError(f"metric definition key {key!r} is not a config key")
            node = getattr(node, part)
        out[key] = json.loads(json.dumps(node, default=str))  # as the tag stores it (JSON scalars)
    return out


def metric_digest(definition: dict[str, Any]) -> str:
    """A short digest of a metric definition: equal digests, comparable validation metrics."""
    blob = json.dumps(sorted(definition.items()), separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def _metric_difference(have: ModelVersion, want: dict[str, Any]) -> str:
    """The metric-definition keys whose values differ between a version's tag and ``want``."""
    try:
        old = json.loads((have.tags or {}).get(METRIC_DEFINITION, "{}"))
    except json.JSONDecodeError:
        old = {}
    keys = sorted(k for k in {*old, *want} if old.get(k, "-") != want.get(k, "-"))
    return ", ".join(f"{k} {old.get(k, '-')} -> {want.get(k, '-')}" for k in keys) or "unrecorded keys"


def _describe(data: dict[str, str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(data.items())) or "no recorded fingerprints"


def _client(cfg: PipelineConfig) -> MlflowClient:
    """A client for the configured registry; a missing sqlite database is not created (read-only use)."""
    uri = cfg.mlflow.tracking_uri
    if uri.startswith("sqlite:///") and ":memory:" not in uri:
        db = Path(uri[len("sqlite:///") :])
        if not db.is_file():
            raise ModelSelectionError(
                f"no MLflow database at {db}: train the models first (emotalker run reproduce)"
            )
    return MlflowClient(uri)


def choose_version(
    cfg: PipelineConfig, stage: str, model: str = CURRENT, *, ws: Workspace, **required: str
) -> ModelVersion:
    """The registered version of ``stage`` to use, refused unless trained on the stores of ``ws`` now.

    ``model``: ``current`` (the newest version trained on these data, features and split), a registry
    alias (``best``) or a version number. ``required`` tags must match too (the transformer's vqvae sha).
    """
    client, name = _client(cfg), registered_name(cfg, stage)
    want = data_fingerprints(ws, stage)
    if model == CURRENT:
        try:
            versions = client.search_model_versions(f"name='{name}'")
        except MlflowException:
            versions = []
        for v in sorted(versions, key=lambda v: int(v.version), reverse=True):
            if version_data(v) == want and all((v.tags or {}).get(k) == x for k, x in required.items()):
                return v
        raise ModelSelectionError(
            f"no version of {name} was trained on the current stores ({_describe(want)}): "
            "train it for this config (emotalker run reproduce) or pass --model best"
        )
    try:
        v = (
            client.get_model_version(name, model)
            if model.isdigit()
            else client.get_model_version_by_alias(name, model)
        )
    except MlflowException as exc:
        raise ModelSelectionError(
            f"no model version {name}@{model} in the registry: train that stage first"
        ) from exc
    have = version_data(v)
    if have != want:
        diff = sorted(k for k in {*have, *want} if have.get(k) != want.get(k))
        raise ModelSelectionError(
            f"{name}@{model} (version {v.version}) was trained on "
            f"{_describe({k: have.get(k, '-') for k in diff})} but the stores hold "
            f"{_describe({k: want.get(k, '-') for k in diff})}: retrain, or use the models of this config "
            "(--model current)"
        )
    for k, x in required.items():
        if (v.tags or {}).get(k) != x:
            raise ModelSelectionError(
                f"{name}@{model} (version {v.version}) has {k}={v.tags.get(k)}, need {x}"
            )
    return v


def load_registered(
    cfg: PipelineConfig, stage: str, model: str = CURRENT, *, ws: Workspace, **required: str
) -> tuple[dict[str, Any], dict[str, Any], ModelVersion, str]:
    """State dict, model config, version and weights sha of a stage (safetensors + JSON, no unpickling)."""
    from safetensors.torch import load_file

    version = choose_version(cfg, stage, model, ws=ws, **required)
    local = Path(
        mlflow.artifacts.download_artifacts(
            run_id=version.run_id,
            artifact_path="checkpoint",
            dst_path=str(registry_cache(cfg) / stage / str(version.version)),
            tracking_uri=cfg.mlflow.tracking_uri,
        )
    )
    weights = local / "weights.safetensors"
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()[:12]
    return load_file(str(weights)), json.loads((local / "model_config.json").read_text()), version, sha


def log_and_register(
    model: nn.Module,
    model_config: dict[str, Any],
    *,
    registered_name: str,
    metric: float,
    alias: str = "best",
    lower_is_better: bool = True,
    data: dict[str, str] | None = None,
    metric_def: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Log the model to the active run, register a version tagged with the fingerprints of its ``data``
    and the digest of its ``metric_def`` (see :func:`metric_definition`), and move ``alias`` to it if it
    beats the alias holder trained on the same data with the same metric definition (or there is none)."""
    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "weights.safetensors"
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(weights))
        (Path(tmp) / "model_config.json").write_text(json.dumps(model_config, indent=2, default=str))
        mlflow.log_artifacts(tmp, "checkpoint")
    model_cpu = model.to("cpu").eval()
    info = mlflow.pytorch.log_model(
        model_cpu, name="model", serialization_format="pickle", registered_model_name=registered_name
    )
    client = MlflowClient()
    version = str(info.registered_model_version)
    digest = metric_digest(metric_def or {})
    all_tags = {"val_metric": str(metric), "run_id": mlflow.active_run().info.run_id}
    all_tags |= {METRIC_DIGEST: digest, METRIC_DEFINITION: json.dumps(metric_def or {}, sort_keys=True)}
    all_tags |= data_tags(data or {}) | (tags or {})
    for key, value in all_tags.items():
        client.set_model_version_tag(registered_name, version, key, value)
    promoted, reason = True, "no version held the alias"
    try:
        current = client.get_model_version_by_alias(registered_name, alias)
    except MlflowException:
        current = None
    if current is not None and version_data(current) != (data or {}):
        promoted = False  # losses on other data, features or split are not comparable
        reason = f"version {current.version} holds it and was trained on other data, features or split"
        log.warning("%s@%s stays at version %s: %s", registered_name, alias, current.version, reason)
    elif current is not None and (current.tags or {}).get(METRIC_DIGEST) != digest:
        promoted = False  # a loss with other terms, weights or temperature is on another scale
        old_digest = (current.tags or {}).get(METRIC_DIGEST, "unrecorded")
        reason = (
            f"version {current.version} holds it with metric definition {old_digest}, version {version} has "
            f"{digest} ({_metric_difference(current, metric_def or {})}): their val metrics "
            f"({(current.tags or {}).get('val_metric', 'nan')} vs {metric:.6g}) are not comparable"
        )
        log.warning("%s@%s stays at version %s: %s", registered_name, alias, current.version, reason)
    elif current is not None:
        old = float(current.tags.get("val_metric", "nan"))
        if math.isfinite(old) and math.isfinite(metric):
            promoted = metric < old if lower_is_better else metric > old
        elif math.isfinite(old):
            promoted = False
        reason = f"val metric {metric:.6g} vs version {current.version}'s {old:.6g}"
    if promoted:
        client.set_registered_model_alias(registered_name, alias, version)
    return {"name": registered_name, "version": version, "alias_moved": promoted, "alias_reason": reason}


def is_registered(tracking_uri: str, registered_name: str, version: str, run_id: str | None = None) -> bool:
    """True when ``registered_name`` version ``version`` is in the registry (and came from ``run_id``).

    A stage's ``done.json`` only says what was registered once; a lost or replaced MLflow database makes
    that claim false, and a stage is done only when its registered model exists.
    """
    if tracking_uri.startswith("sqlite:///") and ":memory:" not in tracking_uri:
        if not Path(tracking_uri[len("sqlite:///") :]).expanduser().is_file():
            return False  # a lost database: asking MLflow would create an empty one here
    try:
        v = MlflowClient(tracking_uri).get_model_version(registered_name, str(version))
    except MlflowException:
        return False
    return run_id is None or v.run_id == run_id


def set_alias(tracking_uri: str, registered_name: str, version: str, alias: str) -> None:
    """Point ``registered_name@alias`` at ``version`` (e.g. a reused stage joining an ablation row)."""
    MlflowClient(tracking_uri).set_registered_model_alias(registered_name, alias, str(version))
