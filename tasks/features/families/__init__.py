"""The feature families, registered once: adding a family is one module here plus one ``register`` line.

Each module (``face``, ``hubert``, ``mel``, ``tokens``) owns everything of its family: its stores'
declaration, fingerprint, worker settings, asset check and chunk compute, as one ``FAMILY`` entry
(``spec.FeatureFamily``). Planning, the chunk workers, the flows and the training datasets only iterate
over this registry.
"""

from __future__ import annotations

from emotalker.configs.constants import FPS
from emotalker.storage.zarr_store import FeatureStore, StoreRoot
from emotalker.tasks.features.families import face, hubert, mel, tokens
from emotalker.tasks.features.spec import FeatureFamily, FlowName, StoreSpec

REGISTRY: dict[str, FeatureFamily] = {}


def register(family: FeatureFamily) -> FeatureFamily:
    """Add a family; its stores must not be written by another family."""
    if family.name in REGISTRY:
        raise ValueError(f"feature family {family.name!r} is already registered")
    if family.flow not in ("face", "audio"):
        raise ValueError(f"feature family {family.name!r}: flow {family.flow!r} is not 'face' or 'audio'")
    taken = set(family.store_names) & {s for f in REGISTRY.values() for s in f.store_names}
    if taken:
        raise ValueError(f"feature family {family.name!r}: stores {sorted(taken)} are already registered")
    REGISTRY[family.name] = family
    return family


def unregister(name: str) -> None:
    REGISTRY.pop(name, None)


def families(flow: FlowName | None = None) -> list[FeatureFamily]:
    """Registered families in registration order (a family comes after the ones it needs)."""
    return [f for f in REGISTRY.values() if flow is None or f.flow == flow]


def family(name: str) -> FeatureFamily:
    if name not in REGISTRY:
        raise KeyError(f"unknown feature family {name!r}; registered: {sorted(REGISTRY)}")
    return REGISTRY[name]


def store_spec(name: str) -> StoreSpec:
    """The declaration of the store called ``name``, whichever family writes it."""
    for fam in REGISTRY.values():
        for spec in fam.stores:
            if spec.name == name:
                return spec
    known = sorted(s for f in REGISTRY.values() for s in f.store_names)
    raise KeyError(f"unknown feature store {name!r}; registered: {known}")


def window_source(root: StoreRoot, store: str, key: str) -> tuple[FeatureStore, str, int]:
    """How a store is read back for training: ``WindowDataset``'s ``(store, key, frames per video frame)``."""
    spec = store_spec(store)
    if key not in spec.arrays:
        raise KeyError(f"store {store!r} declares no array {key!r}; it has {sorted(spec.arrays)}")
    return root.store(store), key, spec.rate


def stored_rate_error(store: FeatureStore, clip_id: str) -> str | None:
    """Why the clip's stored frame rate is not its store's declared one (None when it is).

    Stores at the video rate record none; native-rate stores record ``frame_rate`` per clip, and the ones
    written by older versions (resampled to 25 fps) have none.
    """
    spec = store_spec(store.family)
    if spec.frame_rate == FPS:
        return None
    rate = store.read_attrs(clip_id).get("frame_rate")
    if rate == spec.frame_rate:
        return None
    return (
        f"{store.display_url}: clip {clip_id} is stored at {rate or 'the video rate (an older layout)'}, "
        f"not its native {spec.frame_rate} Hz: rerun the features flow (its fingerprint recomputes it)"
    )


# the built-in families, one line each, in running order (a family after the ones it ``needs``)
register(face.FAMILY)
register(hubert.FAMILY)
register(mel.FAMILY)
register(tokens.FAMILY)
