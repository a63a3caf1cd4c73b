"""The feature families, declared once: adding a family is one ``register`` call here (or anywhere).

A family is one computation over prepared clips that writes one or more stores (HuBERT's single forward
pass writes both ``hubert_emotion`` and ``hubert_content``). Its entry says what the stores hold (array
keys, trailing dims, dtype, frame rate), what its fingerprint depends on, which Dask worker function
computes a chunk of clips, and which subflow runs it; ``plan.py`` (what is stale), ``workers.py``
(computing and writing a chunk), ``flows/featurize.py`` (running it on Dask) and the training datasets
(``window_source``) only iterate over these entries. The Zarr layout itself is ``storage/``'s.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from emotalker.configs.constants import FPS, HUBERT_FPS
from emotalker.configs.schema import PipelineConfig
from emotalker.storage.zarr_store import FeatureStore, StoreRoot

FlowName = Literal["face", "audio"]  # the subflow (``face-features`` / ``audio-features``) that computes it
ClipArrays = tuple[dict[str, np.ndarray], dict[str, Any]]  # arrays and clip attributes of one store
ClipOutputs = dict[str, ClipArrays]  # per store name
# (clips, settings, device, store root) -> (clip_id, outputs or the clip's error) for each clip
ChunkCompute = Callable[
    [list[dict[str, Any]], dict[str, Any], str, StoreRoot], Iterator[tuple[str, ClipOutputs | Exception]]
]


@dataclass(frozen=True)
class ArraySpec:
    """One array of a clip: (time, *dims) of ``dtype``; a ``None`` dim depends on the model (HuBERT width)."""

    dims: tuple[int | None, ...]
    dtype: str
    required: bool = True  # face: landmarks and crop parameters exist only for extracted coefficients

    def check(self, where: str, arr: np.ndarray) -> None:
        dims_ok = arr.ndim == 1 + len(self.dims) and all(
            d is None or d == t for d, t in zip(self.dims, arr.shape[1:], strict=True)
        )
        if not dims_ok:
            raise ValueError(f"{where} has shape {arr.shape}, expected (T, {', '.join(map(str, self.dims))})")
        if arr.dtype != np.dtype(self.dtype):
            raise ValueError(f"{where} has dtype {arr.dtype}, expected {self.dtype}")


@dataclass(frozen=True)
class StoreSpec:
    """One Zarr store a family writes: its arrays and its frames per second along axis 0."""

    name: str
    arrays: Mapping[str, ArraySpec]
    frame_rate: int = FPS

    @property
    def rate(self) -> int:
        """Stored frames per 25 fps video frame (what ``WindowDataset`` reads per window frame)."""
        if self.frame_rate % FPS:
            raise ValueError(f"store {self.name}: frame rate {self.frame_rate} is not a multiple of {FPS}")
        return self.frame_rate // FPS

    def check(self, clip_id: str, arrays: Mapping[str, np.ndarray]) -> None:
        """Refuse undeclared arrays or a missing required one, before anything of the clip is written."""
        extra = sorted(set(arrays) - set(self.arrays))
        missing = sorted(k for k, a in self.arrays.items() if a.required and k not in arrays)
        if extra or missing:
            raise ValueError(f"{self.name}/{clip_id}: undeclared arrays {extra}, missing arrays {missing}")
        for key, arr in arrays.items():
            self.arrays[key].check(f"{self.name}/{clip_id}/{key}", np.asarray(arr))


def _no_settings(cfg: PipelineConfig) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class FeatureFamily:
    """A feature family's declaration. The object is shipped to the Dask workers (it pickles)."""

    name: str  # progress, Prefect task runs and the flows' result keys
    flow: FlowName
    stores: tuple[StoreSpec, ...]  # the first one names the failure report
    fingerprint: Callable[[PipelineConfig], str]  # model files + settings: a change recomputes the family
    compute: ChunkCompute  # runs on a Dask worker; see ``workers.compute_chunk``
    settings: Callable[[PipelineConfig], dict[str, Any]] = _no_settings  # what the workers need (JSON-able)
    uses_device: bool = False  # runs a model: the workers get ``cfg.torch_device()``, else "cpu"
    check_assets: Callable[[PipelineConfig], None] | None = None  # fail before any Dask work
    needs: tuple[FeatureFamily, ...] = ()  # a clip is computed only once these hold it fresh
    prepare: Callable[[PipelineConfig, list[dict[str, Any]]], None] | None = None  # e.g. fit k-means
    prepared: Callable[[PipelineConfig], bool] | None = None  # whether ``prepare``'s output exists
    finish: Callable[[PipelineConfig], None] | None = None  # after the chunks, e.g. record the k-means
    store_names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "store_names", tuple(s.name for s in self.stores))


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


# ------------------------------------------------------------------------------------ the families
def _register_builtin() -> None:
    from emotalker.configs.constants import COEFF_DIM, MEL_BINS, MEL_FRAMES_PER_VIDEO_FRAME, MOTION_DIM
    from emotalker.tasks.features import plan, workers

    f32 = "float32"
    register(
        FeatureFamily(
            name="face",
            flow="face",
            stores=(
                StoreSpec(
                    "face",
                    {
                        "coeffs": ArraySpec((COEFF_DIM,), f32),
                        "motion": ArraySpec((MOTION_DIM,), f32),
                        "valid": ArraySpec((), "bool"),
                        "landmarks": ArraySpec((68, 2), f32, required=False),
                        "trans_params": ArraySpec((5,), f32, required=False),
                    },
                ),
            ),
            fingerprint=plan.face_fingerprint,
            compute=workers.face_outputs,
            settings=plan.face_settings,
            uses_device=True,
            check_assets=plan.check_face_assets,
        )
    )
    hubert_feats = {"feats": ArraySpec((None,), f32)}  # the checkpoint's width (768 for base)
    hubert = register(
        FeatureFamily(
            name="hubert",
            flow="audio",
            stores=(
                StoreSpec("hubert_emotion", hubert_feats, HUBERT_FPS),
                StoreSpec("hubert_content", hubert_feats, HUBERT_FPS),
            ),
            fingerprint=plan.hubert_fingerprint,
            compute=workers.hubert_outputs,
            settings=plan.audio_settings,
            uses_device=True,
            check_assets=plan.check_audio_assets,
        )
    )
    register(
        FeatureFamily(
            name="mel",
            flow="audio",
            stores=(StoreSpec("mel", {"windows": ArraySpec((MEL_BINS, MEL_FRAMES_PER_VIDEO_FRAME), f32)}),),
            fingerprint=plan.mel_fingerprint,
            compute=workers.mel_outputs,
        )
    )
    register(
        FeatureFamily(
            name="tokens",
            flow="audio",
            stores=(StoreSpec("tokens", {"tokens": ArraySpec((), "int16")}, HUBERT_FPS),),  # one per frame
            fingerprint=plan.kmeans_fingerprint,
            compute=workers.tokens_outputs,
            settings=plan.kmeans_settings,
            needs=(hubert,),
            prepare=plan.ensure_kmeans,
            prepared=plan.kmeans_exists,
            finish=plan.record_kmeans,
        )
    )


_register_builtin()
