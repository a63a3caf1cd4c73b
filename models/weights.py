"""What every model loader shares: the error for a checkpoint that does not fit its network, the strict
key-and-shape check that names what differs, the one ``torch.load(weights_only=True)`` and the one reader of
SadTalker's safetensors sections."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
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


def load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], where: str, hint: str = "") -> None:
    """:func:`check_state_dict`, then ``load_state_dict(strict=True)``: a checkpoint fits exactly or fails
    with one message that names what differs."""
    check_state_dict(module, state, where, hint)
    module.load_state_dict(dict(state), strict=True)


def torch_load_weights(path: Path) -> Any:
    """``torch.load(weights_only=True)`` on the CPU, so a checkpoint can never execute code; an unreadable
    file is a :class:`CheckpointError` that names it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle / zip errors: name the file
        raise CheckpointError(f"{path}: cannot be read with torch.load(weights_only=True) ({exc})") from exc


def read_safetensors_section(path: Path, prefix: str) -> dict[str, torch.Tensor]:
    """The tensors under ``prefix`` (stripped) of a SadTalker ``SadTalker_V0.0.2_*.safetensors`` file, read
    lazily so the other networks' sections are never loaded; none under ``prefix`` is an error."""
    from safetensors import safe_open

    out: dict[str, torch.Tensor] = {}
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            for k in f.keys():
                if k.startswith(prefix):
                    out[k[len(prefix) :]] = f.get_tensor(k)
    except Exception as exc:  # header / format errors: name the file
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from exc
    if not out:
        raise CheckpointError(f"{path}: no '{prefix}' tensors (expected SadTalker_V0.0.2_256.safetensors)")
    return out
