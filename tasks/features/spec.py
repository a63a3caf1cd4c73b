"""What a feature family declares: its stores' arrays (``ArraySpec``, ``StoreSpec``) and its entry
(``FeatureFamily``). The families themselves are in ``families/``, one module each.

A family is one computation over prepared clips that writes one or more stores (HuBERT's single forward
pass writes both ``hubert_emotion`` and ``hubert_content``). Its entry says what the stores hold (array
keys, trailing dims, dtype, frame rate), what its fingerprint depends on, which Dask worker function
computes a chunk of clips, and which subflow runs it; ``plan.py`` (what is stale), ``workers.py``
(checking and writing a chunk), ``flows/featurize.py`` (running it on Dask) and the training datasets
(``families.window_source``) only iterate over these entries. The Zarr layout itself is ``storage/``'s.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from emotalker.configs.constants import FPS
from emotalker.configs.schema import PipelineConfig
from emotalker.storage.zarr_store import StoreRoot

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
