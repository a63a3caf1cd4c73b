"""One run's view of the storage: the stores' root, the manifest and the split, resolved once per flow.

Flows build a ``Workspace`` from the config's paths and hand it to tasks, so no task rebuilds the store
root from the config or looks the shared files up again (``shared_file`` says where each is read from).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from emotalker.storage.manifest import ClipRecord, Manifest
from emotalker.storage.shared import shared_file
from emotalker.storage.zarr_store import FeatureStore, StoreRoot

if TYPE_CHECKING:
    from emotalker.configs.schema import PathsConfig


@dataclass(frozen=True)
class Workspace:
    """The stores' root and the shared files of one config's ``paths``."""

    paths: PathsConfig
    stores: StoreRoot

    @classmethod
    def from_paths(cls, paths: PathsConfig) -> Workspace:
        return cls(paths, StoreRoot.from_paths(paths))

    def store(self, family: str) -> FeatureStore:
        """The Zarr store of one feature family."""
        return self.stores.store(family)

    @property
    def manifest_path(self) -> Path:
        """Where the manifest is read from (the local file, else the copy beside the stores)."""
        return shared_file(self.paths, "manifest")

    @property
    def split_path(self) -> Path:
        """Where the split is read from (the local file, else the copy beside the stores)."""
        return shared_file(self.paths, "split")

    def manifest(self) -> Manifest:
        """The manifest to read clips from."""
        return Manifest(self.manifest_path)

    def clips(self, status: str | None = None) -> list[ClipRecord]:
        """The manifest's clips as typed records, optionally of one status."""
        return self.manifest().clips(status=status)
