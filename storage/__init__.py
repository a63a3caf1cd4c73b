"""Storage layer: the Parquet clip manifest, per-family Zarr feature stores and windowed datasets.

Names load lazily, so a light helper (``emotalker.storage.files``) does not import pyarrow, Zarr or torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "MANIFEST_COLUMNS": "manifest",
    "STATUS": "manifest",
    "Manifest": "manifest",
    "clip_id_for": "manifest",
    "FeatureStore": "zarr_store",
    "WindowDataset": "windows",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
