"""The training stages, declared once: adding a stage is one module and one ``register`` line here.

``STAGES`` maps each name to its :class:`~emotalker.tasks.training.engine.Stage`, in training order;
the registry's data fingerprints, the flows, evaluation and ablations iterate over it.
"""

from __future__ import annotations

from emotalker.tasks.training import lip, transformer, vqvae
from emotalker.tasks.training.engine import Stage

STAGES: dict[str, Stage] = {}


def register(stage: Stage) -> Stage:
    """Add a stage; its name (checkpoint folder, MLflow run, registered model) must be new."""
    if stage.name in STAGES:
        raise ValueError(f"training stage {stage.name!r} is already registered")
    STAGES[stage.name] = stage
    return stage


def unregister(name: str) -> None:
    STAGES.pop(name, None)


register(vqvae.STAGE)
register(lip.STAGE)
register(transformer.STAGE)
