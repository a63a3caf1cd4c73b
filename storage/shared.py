"""The manifest and the split, shared through the feature stores' root.

Training, evaluation and generation read which clips exist, their emotion and their split from these two
files under ``paths.root``. With ``paths.features_url`` set (object storage, or a folder another machine
mounts), the flows that write them copy them beside the stores at that URL, so a second machine needs
only the URL, the storage options and its own ``paths.root``: where its root lacks a file, the copy
beside the stores is read (fetched fresh on every call, so a later publish is seen).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from emotalker.storage.zarr_store import StoreRoot

if TYPE_CHECKING:
    from emotalker.configs.schema import PathsConfig

# paths.<name> -> its name beside the stores
SHARED_FILES: dict[str, str] = {"manifest": "manifest.parquet", "split": "split.json"}
FETCHED_DIR = ".from-stores"  # under paths.root: copies of the shared files read from the stores' root


def _check(name: str) -> str:
    if name not in SHARED_FILES:
        raise ValueError(f"unknown shared file {name!r}; expected one of {sorted(SHARED_FILES)}")
    return SHARED_FILES[name]


def publish_shared(paths: PathsConfig) -> list[str]:
    """Copy the local manifest and split beside the stores (one PUT each) when ``features_url`` is set.

    Returns the names copied; nothing happens for stores under the local ``paths.features``.
    """
    if paths.features_url is None:
        return []
    root = StoreRoot.from_paths(paths)
    done = []
    for name, relpath in SHARED_FILES.items():
        local = paths.resolve(name)
        if local.is_file() and (root.is_remote or local.resolve() != Path(root.url(relpath)).resolve()):
            root.upload(local, relpath)  # whole-file replace: readers never see half of it
            done.append(name)
    return done


def shared_file(paths: PathsConfig, name: str) -> Path:
    """The local path to read ``paths.<name>`` (``manifest`` or ``split``) from.

    The file under ``paths.root`` when it exists (or no ``features_url`` is set); else the copy beside the
    stores, downloaded into ``paths.root/.from-stores``. Where neither exists, the local path, so the
    caller's "run the prepare flow" error names where the file belongs.
    """
    relpath = _check(name)
    local = paths.resolve(name)
    if local.exists() or paths.features_url is None:
        return local
    try:
        fetched = StoreRoot.from_paths(paths).local_copy(relpath, paths.root / FETCHED_DIR)
    except FileNotFoundError:
        return local
    return fetched if fetched.is_file() else local
