"""Load the trained stages from the MLflow registry as one generator."""

from __future__ import annotations

import numpy as np

from emotalker.configs.schema import PipelineConfig
from emotalker.models.emotalker import EmoTalker
from emotalker.storage.workspace import Workspace
from emotalker.tasks.training.lip import restore_lip
from emotalker.tasks.training.registry import CURRENT, load_registered
from emotalker.tasks.training.stages import STAGES
from emotalker.tasks.training.transformer import restore_transformer
from emotalker.tasks.training.vqvae import restore_vqvae


def load_emotalker(
    cfg: PipelineConfig, model: str | dict[str, str] = CURRENT, device: str = "cpu", *, ws: Workspace
) -> tuple[EmoTalker, dict[str, str]]:
    """All three stages and the registered version used for each (safetensors + JSON, nothing unpickled).

    ``model``: the versions a run's training flows returned ({stage: version}), ``current`` (the newest
    versions trained on the stores as they are) or a registry alias such as ``best``. Every stage is
    refused unless it was trained on the data, features and split of ``ws`` as they are now. Read-only:
    nothing is created in the tracking store (the registry is read with an explicit tracking URI).
    """
    chosen = model if isinstance(model, dict) else dict.fromkeys(STAGES, model)
    missing = [s for s in STAGES if s not in chosen]
    if missing:
        raise ValueError(f"no model version given for {missing}; expected one per stage {list(STAGES)}")
    vq_state, vq_cfg, vq_version, vq_sha = load_registered(cfg, "vqvae", str(chosen["vqvae"]), ws=ws)
    tr_state, tr_cfg, tr_version, _ = load_registered(
        cfg, "transformer", str(chosen["transformer"]), ws=ws, vqvae_weights_sha=vq_sha
    )
    lip_state, lip_cfg, lip_version, _ = load_registered(cfg, "lip", str(chosen["lip"]), ws=ws)
    generator = EmoTalker(
        restore_vqvae(vq_state, vq_cfg),
        restore_transformer(tr_state, tr_cfg),
        restore_lip(lip_state, lip_cfg),
        np.asarray(vq_cfg["face_mean"]),
        np.asarray(vq_cfg["face_std"]),
        max_context=cfg.generation.max_context,
    )
    versions = {"vqvae": str(vq_version.version), "lip": str(lip_version.version)}
    versions["transformer"] = str(tr_version.version)
    return generator.to(device).eval(), versions
