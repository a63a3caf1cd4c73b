"""The chunk machinery every feature family shares, on the Dask workers: compute, check, write.

Models are loaded once per worker process (``cached_model``) and reused for every chunk of clips.
Each family's compute (its module in ``families/``) turns a chunk of manifest rows into each clip's arrays
or its error; ``compute_chunk`` checks and writes them for every family alike and returns one status
per clip, so a clip that fails (no face, unreadable audio) is reported and never stops the others.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

from emotalker.storage.zarr_store import FeatureStore, StoreRoot
from emotalker.tasks.features.spec import ClipOutputs, FeatureFamily

_MODEL_CACHE: dict[tuple, Any] = {}
_CACHE_LOCK = threading.Lock()


def cached_model(key: tuple, build: Callable[[], Any]) -> Any:
    """``build()``'s model, built once per worker process for ``key`` (every setting and model file the
    model depends on: a long-lived worker must not reuse one built from a since-replaced checkpoint)."""
    with _CACHE_LOCK:
        if key not in _MODEL_CACHE:
            _MODEL_CACHE[key] = build()
        return _MODEL_CACHE[key]


def _replace(clip: dict[str, Any]) -> bool:
    """Whether the clip's write must first clear an earlier version: unless the flow's listing found
    nothing of it in the store (``in_store`` False, set by ``plan.pending``)."""
    return clip.get("in_store", True) is not False


def _status(clip_id: str, error: Exception | None = None) -> dict[str, Any]:
    return {
        "clip_id": clip_id,
        "ok": error is None,
        "error": None if error is None else f"{type(error).__name__}: {error}",
    }


def video_rate_attrs(clip: dict[str, Any]) -> dict[str, Any]:
    """The clip attributes of a store at the video rate: its number of frames."""
    return {"n_frames": int(clip["n_frames"])}


def each_clip(
    clips: list[dict[str, Any]], outputs: Callable[[dict[str, Any]], ClipOutputs]
) -> Iterator[tuple[str, ClipOutputs | Exception]]:
    """``outputs`` of each clip, or the clip's error (recorded per clip; it never stops the others)."""
    for clip in clips:
        try:
            yield clip["clip_id"], outputs(clip)
        except Exception as exc:
            yield clip["clip_id"], exc


def compute_chunk(
    clips: list[dict[str, Any]],
    family: FeatureFamily,
    store_root: StoreRoot | str,
    settings: dict[str, Any],
    device: str,
    fp: str,
) -> list[dict[str, Any]]:
    """One chunk of any family on a Dask worker: compute, check against the declaration, write each clip.

    Returns one status per clip; a clip's group is written (and marked complete with ``fp``) only when
    every array of every store the family declares checks out.
    """
    root = store_root if isinstance(store_root, StoreRoot) else StoreRoot(store_root)
    specs = {spec.name: spec for spec in family.stores}
    stores = {name: FeatureStore(root, name) for name in specs}  # opened once per chunk
    replace = {c["clip_id"]: _replace(c) for c in clips}
    results = []
    for clip_id, out in family.compute(clips, settings, device, root):
        try:
            if isinstance(out, Exception):
                raise out
            if set(out) != set(specs):
                raise ValueError(f"{family.name} wrote stores {sorted(out)}, declared {sorted(specs)}")
            for name, (arrays, _) in out.items():
                specs[name].check(clip_id, arrays)
            for name, (arrays, attrs) in out.items():
                stores[name].write_clip(
                    clip_id, arrays, attrs=attrs, fingerprint=fp, replace=replace[clip_id]
                )
            results.append(_status(clip_id))
        except Exception as exc:  # recorded per clip; the flow reports them
            results.append(_status(clip_id, exc))
    return results


def submit_chunks(
    client: Any,
    chunks: list[list[dict[str, Any]]],
    family: FeatureFamily,
    *,
    store_root: StoreRoot,
    settings: dict[str, Any],
    device: str,
    fp: str,
) -> list[Any]:
    """One Dask task per chunk (``compute_chunk``), keyed by family, chunk and fingerprint; their futures."""
    return client.map(
        compute_chunk,
        chunks,
        pure=False,
        key=[f"{family.name}-{i}-{fp}" for i in range(len(chunks))],
        family=family,
        store_root=store_root,
        settings=settings,
        device=device,
        fp=fp,
    )


def failure_update(status: dict[str, Any], fp: str) -> dict[str, str] | None:
    """A clip's entry in its family's failure records: None clears it (computed), else its error and the
    fingerprint it failed with (a rerun with the same fingerprint skips it)."""
    return None if status["ok"] else {"error": status["error"], "fingerprint": fp}
