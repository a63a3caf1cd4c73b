"""Training checkpoints that reload with ``torch.load(weights_only=True)``: tensors and plain values only.

A checkpoint holds model/optimizer/scheduler state, the step, the MLflow run id and the RNG states, so a
killed run resumes into the same MLflow run and ends where an uninterrupted run would.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emotalker.storage.files import atomic_path


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable or made for another model/config."""


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2])},
        "python": repr(random.getstate()),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(
        ("MT19937", state["numpy"]["key"].numpy().astype(np.uint32), state["numpy"]["pos"], 0, 0.0)
    )
    import ast

    py = ast.literal_eval(state["python"])
    random.setstate((py[0], tuple(py[1]), py[2]))


def save_checkpoint(path: Path, payload: dict[str, Any]) -> Path:
    """Write atomically (tmp + rename) so a kill mid-save keeps the previous checkpoint intact."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_checkpoint(path: Path, map_location: str = "cpu") -> dict[str, Any]:
    """Load with ``weights_only=True``: a checkpoint can never execute code."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        raise CheckpointError(f"{path}: not a loadable checkpoint ({type(exc).__name__}: {exc})") from exc
