"""Training flows, one per stage, each one MLflow run (nested under ``reproduce`` when called from it).

A stage reruns as a no-op when its fingerprint (model + training config + inputs) already finished;
a killed stage resumes from its last checkpoint into the same MLflow run (``tasks/training/engine.py``).
"""

from __future__ import annotations

from typing import Any

from emotalker.flows.common import CredentialFree, Overrides, pipeline_flow, resolve_config
from emotalker.storage.workspace import Workspace
from emotalker.tasks.training import lip, transformer, vqvae
from emotalker.tasks.training.engine import run_stage


@pipeline_flow("train-vqvae")
def train_vqvae(
    config: CredentialFree = "configs/paper.yaml",
    overrides: Overrides = None,
    parent_run_id: str | None = None,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Stage 1: the motion VQ-VAE with emotion head on the 57 face coefficients (Eq. 3)."""
    cfg = resolve_config(config, overrides)
    ws = Workspace.from_paths(cfg.paths)
    return run_stage(cfg, vqvae.STAGE, ws=ws, parent_run_id=parent_run_id, stop_after=stop_after)


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
    return run_stage(
        cfg,
        transformer.STAGE,
        ws=Workspace.from_paths(cfg.paths),
        parent_run_id=parent_run_id,
        stop_after=stop_after,
        vqvae_version=vqvae_version,
    )


@pipeline_flow("train-lip")
def train_lip(
    config: CredentialFree = "configs/paper.yaml",
    overrides: Overrides = None,
    parent_run_id: str | None = None,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Lip branch: mel windows + reference expression -> 13 lip coefficients (Eq. 10)."""
    cfg = resolve_config(config, overrides)
    ws = Workspace.from_paths(cfg.paths)
    return run_stage(cfg, lip.STAGE, ws=ws, parent_run_id=parent_run_id, stop_after=stop_after)
