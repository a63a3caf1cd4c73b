"""What every model loader shares: the error for a checkpoint that does not fit its network, and the
strict key-and-shape check that names what differs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn


class CheckpointError(ValueError):
    """A checkpoint that exists but does not fit the network (layout, keys, shapes); the message names
    the file."""


def check_state_dict(module: nn.Module, state: Mapping[str, Any], where: str, hint: str = "") -> None:
    """Strict: the same keys and shapes as ``module``'s state dict, else one error with counts and
    examples (``hint`` says what to check)."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    tail = f"; {hint}" if hint else ""
    if missing or unexpected:
        raise CheckpointError(
            f"{where}: {len(missing)} missing keys (e.g. {missing[:5]}), "
            f"{len(unexpected)} unexpected keys (e.g. {unexpected[:5]}){tail}"
        )
    bad = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if state[k].shape != v.shape
    ]
    if bad:
        raise CheckpointError(f"{where}: {len(bad)} shape mismatches (e.g. {bad[:5]}){tail}")
