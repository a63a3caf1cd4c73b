"""The paper's ablations (Tables 2-4): every row trained as a nested MLflow run, the tables logged beside
the paper's numbers.

Rows are the config plus a few overrides (tasks/evaluation/ablation.py). The stage flows are called with
them, so a stage a row shares with the default run has the same fingerprint and is reused, not retrained.
A row's stage 2 trains on the row's own stage-1 version and its evaluation loads exactly the versions the
row trained or reused; they carry the registry alias ``ablate-<row>``, and ``best`` is never moved by an
ablation.
Needs the feature stores (run ``reproduce`` or ``features`` first).
"""

from __future__ import annotations

from typing import Any

import mlflow
import pandas as pd
from prefect import get_run_logger

from emotalker.configs.schema import PipelineConfig
from emotalker.flows.common import (
    CredentialFree,
    Overrides,
    pipeline_flow,
    resolve_config,
    table_artifact,
)
from emotalker.flows.evaluate import evaluate_flow
from emotalker.flows.train import train_lip, train_transformer, train_vqvae
from emotalker.tasks.evaluation.ablation import (
    TABLE_TITLES,
    AblationRow,
    Variant,
    ablation_rows,
    row_versions,
    table_rows,
    variant_overrides,
    variants,
)
from emotalker.tasks.tracking import config_params, setup_mlflow
from emotalker.tasks.training.registry import set_alias

STAGE_FLOWS = {"vqvae": train_vqvae, "lip": train_lip, "transformer": train_transformer}


def _run_variant(
    cfg: PipelineConfig, config: str, overrides: list[str], v: Variant, parent_run_id: str
) -> dict[str, Any]:
    """Train (or reuse) the variant's stages, then evaluate exactly those versions when its table needs it.

    Registered under the row's alias (``train.model_alias``), so ``best`` stays the pipeline's own; the
    alias is pointed at reused versions too, so ``ablate-<row>`` always names what the row used.
    """
    alias = v.alias
    ov = variant_overrides(cfg, overrides, v)
    tracking_uri = cfg.mlflow.tracking_uri
    out: dict[str, Any] = {"alias": alias}
    versions: dict[str, str] = {}
    for stage in v.stages:
        kwargs: dict[str, Any] = {"parent_run_id": parent_run_id}
        if stage == "transformer":
            kwargs["vqvae_version"] = versions["vqvae"]  # the row's own stage 1
        res = STAGE_FLOWS[stage](config, ov, **kwargs)
        reg = res.get("registered")
        if not reg:
            raise RuntimeError(f"ablation row {v.key}: train-{stage} did not finish ({res})")
        versions[stage] = str(reg["version"])
        set_alias(tracking_uri, reg["name"], reg["version"], alias)
        mlflow.set_tags(
            {
                f"{stage}.run_id": res["run_id"],
                f"{stage}.version": reg["version"],
                f"{stage}.reused": bool(res.get("skipped", False)),
            }
        )
        out[stage] = res
    if "vqvae" in out:
        out["VQ MSE"] = float(out["vqvae"]["best_metric"])  # validation reconstruction MSE (Table 3)
    if v.evaluate:
        ev = evaluate_flow(config, ov, parent_run_id=parent_run_id, model=versions, method=v.method)
        out.update({k: val for k, val in ev.items() if isinstance(val, int | float)})
    metrics = {k: float(val) for k, val in out.items() if isinstance(val, int | float)}
    mlflow.log_metrics({f"ablation/{k}": val for k, val in metrics.items()})
    return out


def _row_run(
    cfg: PipelineConfig, config: str, overrides: list[str], v: Variant, rows: list[AblationRow]
) -> dict[str, Any]:
    """One trained configuration as a nested MLflow run under the ablation's parent run."""
    with mlflow.start_run(run_name=f"{cfg.name}-ablate-{v.key}", nested=True) as row_run:
        mlflow.set_tags({"stage": "ablation-row", "ablation.row": v.key, "pipeline": cfg.name})
        mlflow.log_params(
            {"ablation.overrides": " ".join(v.overrides) or "(default)", "ablation.method": v.method}
        )
        names = [r.name for r in rows if r.variant.ident == v.ident]
        mlflow.set_tag("ablation.rows", "; ".join(names))
        get_run_logger().info("ablation row %s (%s)", v.key, ", ".join(names))
        res = _run_variant(cfg, config, overrides, v, row_run.info.run_id)
        return {**res, "run_id": row_run.info.run_id}


@pipeline_flow("ablate")
def ablate_flow(config: CredentialFree = "configs/paper.yaml", overrides: Overrides = None) -> dict[str, Any]:
    """Train every row of the configured ablation tables and log Tables 2-4 beside the paper's.

    Args:
        overrides: ``key=value`` config overrides, e.g. ``["ablation.tables=[3]"]``.
    """
    cfg = resolve_config(config, overrides)
    rows = ablation_rows(cfg)
    todo = variants(rows)
    get_run_logger().info("ablation: %d rows, %d distinct trained configurations", len(rows), len(todo))
    setup_mlflow(cfg)
    results: dict[tuple[str, ...], dict[str, Any]] = {}
    tables: dict[str, list[dict[str, Any]]] = {}
    with mlflow.start_run(run_name=f"{cfg.name}-ablate") as parent:
        mlflow.set_tags({"stage": "ablate", "pipeline": cfg.name})
        mlflow.log_params(config_params(cfg))
        for v in todo:
            results[v.ident] = _row_run(cfg, config, list(overrides or []), v, rows)
        for t in sorted(cfg.ablation.tables):
            lines = table_rows(t, rows, results)
            tables[f"table{t}"] = lines
            table_artifact(f"ablation-table{t}", lines, f"{TABLE_TITLES[t]}: this run beside the paper")
            mlflow.log_table(pd.DataFrame(lines), artifact_file=f"ablation/table{t}.json")
        out = {"run_id": parent.info.run_id, "tables": tables, "rows": row_versions(results)}
    return out
