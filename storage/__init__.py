"""Storage layer: the Parquet clip manifest, per-family Zarr feature stores and windowed datasets."""

from emotalker.storage.manifest import MANIFEST_COLUMNS, STATUS, Manifest, clip_id_for
from emotalker.storage.zarr_store import FAMILIES, FeatureStore

__all__ = [
    "FAMILIES",
    "MANIFEST_COLUMNS",
    "STATUS",
    "FeatureStore",
    "Manifest",
    "WindowDataset",
    "clip_id_for",
]


def __getattr__(name: str):
    # WindowDataset imports torch; load it lazily so Dask/Prefect code using only the stores stays light.
    if name == "WindowDataset":
        from emotalker.storage.windows import WindowDataset

        return WindowDataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
