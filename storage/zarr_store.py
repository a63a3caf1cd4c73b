"""Per-family Zarr v3 feature stores with crash-safe, per-clip writes.

Layout: ``{root}/{family}.zarr`` holds a group ``clips/<clip_id>`` per clip, one array per feature key,
chunked along time (axis 0). A clip counts as present only once its group attrs carry ``complete: True``,
which is written after every array, so a writer killed midway leaves a clip that readers treat as absent.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import zarr
import zarr.codecs
from zarr.errors import ContainsGroupError

from emotalker.storage.files import file_lock

FAMILIES: frozenset[str] = frozenset({"face", "hubert_emotion", "hubert_content", "tokens", "mel"})

CLIPS_GROUP = "clips"
TIME_CHUNK = 256  # frames per chunk along axis 0 (~10 s at 25 fps)
MAX_CHUNK_BYTES = 16 << 20  # shrink the time chunk for very wide rows
_RESERVED_ATTRS = ("complete", "fingerprint")


def _compressor() -> zarr.codecs.BloscCodec:
    """Blosc+zstd with byte shuffle: good ratio on float features, fast to decode for training."""
    return zarr.codecs.BloscCodec(cname="zstd", clevel=3, shuffle="shuffle")


def _to_json(value: Any) -> Any:
    """Convert numpy scalars/arrays (and nested containers) into JSON-serialisable values for zarr attrs."""
    if isinstance(value, Mapping):
        return {str(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


def _check_clip_id(clip_id: str) -> None:
    if not isinstance(clip_id, str) or not clip_id or "/" in clip_id or clip_id.startswith((".", "__")):
        raise ValueError(f"invalid clip_id {clip_id!r}: need a non-empty name, no '/', no leading '.'/'__'")


def _time_chunks(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...] | str:
    """Chunk only along time; keep each chunk under MAX_CHUNK_BYTES."""
    if len(shape) == 0:
        return "auto"  # zarr turns an empty chunk tuple into shape (1,)
    row_bytes = max(1, itemsize * math.prod(shape[1:]))
    t = max(1, min(TIME_CHUNK, MAX_CHUNK_BYTES // row_bytes, shape[0] or 1))
    return (t, *(max(1, d) for d in shape[1:]))


class FeatureStore:
    """One Zarr v3 store per feature family; per-clip atomic writes and frame-range reads.

    ``root`` may be a local path, a ``file://`` URL (opened as a local store) or any fsspec URL
    (``memory://``, ``s3://`` ...; passed to zarr with ``storage_options``). The object pickles cheaply
    (the zarr handle is reopened lazily), so it can be shipped to Dask workers and DataLoader workers.
    """

    def __init__(self, root: str | Path, family: str, storage_options: dict[str, Any] | None = None):
        if family not in FAMILIES:
            raise ValueError(f"unknown feature family {family!r}; expected one of {sorted(FAMILIES)}")
        self.family = family
        self.storage_options = dict(storage_options or {})
        root_s = str(root)
        parsed = urlparse(root_s)
        self._is_url = "://" in root_s and parsed.scheme not in ("", "file")
        if parsed.scheme == "file":
            root_s = parsed.path  # zarr's LocalStore: real directories, proper deletes
        self.root = root_s.rstrip("/") or "/"
        self.url = f"{self.root}/{family}.zarr"
        self._group: zarr.Group | None = None

    # ------------------------------------------------------------------ plumbing
    def __repr__(self) -> str:
        return f"FeatureStore({self.url!r})"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_group"] = None
        return state

    @property
    def group(self) -> zarr.Group:
        """Root group of the store (created on first use)."""
        if self._group is None:
            kwargs: dict[str, Any] = {"zarr_format": 3}
            if self._is_url:
                kwargs["storage_options"] = self.storage_options or None
            else:
                Path(self.url).parent.mkdir(parents=True, exist_ok=True)
            try:
                self._group = zarr.open_group(self.url, mode="a", **kwargs)
            except ContainsGroupError:
                # another writer created the root between zarr's "exists?" check and its create: open it
                self._group = zarr.open_group(self.url, mode="a", **kwargs)
        return self._group

    def _clips(self) -> zarr.Group:
        return self.group.require_group(CLIPS_GROUP)

    def _clip_group(self, clip_id: str) -> zarr.Group | None:
        """The clip's group if it exists and is complete, else None."""
        _check_clip_id(clip_id)
        try:
            node = self.group[f"{CLIPS_GROUP}/{clip_id}"]
        except (KeyError, FileNotFoundError, json.JSONDecodeError, ValueError):
            return None
        if not isinstance(node, zarr.Group) or node.attrs.get("complete") is not True:
            return None
        return node

    def _require_clip(self, clip_id: str) -> zarr.Group:
        g = self._clip_group(clip_id)
        if g is None:
            raise KeyError(f"clip {clip_id!r} is missing or incomplete in {self.url}")
        return g

    @contextmanager
    def _write_lock(self) -> Iterator[None]:
        """Exclusive ``file_lock`` on ``<family>.zarr.lock`` for local stores (no-op for remote URLs).

        Two writers of one clip (two feature flows on the same stores, or two Dask workers) would
        otherwise delete each other's half-written group and mark a mix of both as complete.
        """
        if self._is_url:
            yield
            return
        with file_lock(self.url + ".lock"):
            yield

    # ------------------------------------------------------------------ writes
    def write_clip(
        self,
        clip_id: str,
        arrays: dict[str, np.ndarray],
        attrs: dict | None = None,
        fingerprint: str | None = None,
    ) -> None:
        """Write all arrays of a clip, then mark it complete (attrs last), replacing any earlier version.

        ``n_frames`` defaults to the first dimension of the first non-scalar array unless given in ``attrs``.
        """
        _check_clip_id(clip_id)
        if not arrays:
            raise ValueError(f"write_clip({clip_id!r}): no arrays given")
        user_attrs = dict(attrs or {})
        clash = [k for k in _RESERVED_ATTRS if k in user_attrs]
        if clash:
            raise ValueError(f"write_clip({clip_id!r}): attrs {clash} are reserved (use fingerprint=)")
        prepared: dict[str, np.ndarray] = {}
        for key, value in arrays.items():
            if not isinstance(key, str) or not key or "/" in key:
                raise ValueError(f"write_clip({clip_id!r}): invalid array key {key!r}")
            arr = np.asarray(value)
            if arr.dtype.kind not in "biuf":
                raise ValueError(
                    f"write_clip({clip_id!r}): array {key!r} has unsupported dtype {arr.dtype}; use numeric"
                )
            prepared[key] = np.require(arr, requirements="C")  # (ascontiguousarray makes 0-d 1-d)
        n_frames = user_attrs.pop("n_frames", None)
        if n_frames is None:
            n_frames = next((a.shape[0] for a in prepared.values() if a.ndim > 0), None)

        final = _to_json(user_attrs)
        final.update({"n_frames": _to_json(n_frames), "fingerprint": fingerprint, "complete": True})
        with self._write_lock():
            clips = self._clips()
            if clip_id in clips:
                del clips[clip_id]  # the old version stops being complete before anything new is written
            g = clips.create_group(clip_id, attributes={"complete": False})
            for key, arr in prepared.items():
                z = g.create_array(
                    key,
                    shape=arr.shape,
                    dtype=arr.dtype,
                    chunks=_time_chunks(arr.shape, arr.dtype.itemsize),
                    compressors=_compressor(),
                    fill_value=0,
                )
                if arr.size:
                    z[...] = arr
            g.attrs.put(final)  # single metadata write: the commit point

    def delete_clip(self, clip_id: str) -> None:
        """Remove a clip (complete or partial); no error if absent."""
        _check_clip_id(clip_id)
        with self._write_lock():
            clips = self._clips()
            if clip_id in clips:
                del clips[clip_id]

    def set_meta(self, **kv: Any) -> None:
        """Store-level attrs (e.g. model fingerprint, k-means config), merged into existing ones."""
        bad = [k for k in kv if k == CLIPS_GROUP]
        if bad:
            raise ValueError(f"meta key {bad[0]!r} is reserved")
        with self._write_lock():
            self._group = None  # merge into what is on disk now, not a copy read before another writer
            self.group.attrs.update(_to_json(kv))

    def exists(self) -> bool:
        """Whether the store has been created, checked without creating it (read-only commands)."""
        if self._group is not None:
            return True
        if not self._is_url:
            return (Path(self.url) / "zarr.json").is_file()
        import fsspec

        fs, path = fsspec.core.url_to_fs(self.url, **self.storage_options)
        return bool(fs.exists(f"{path}/zarr.json"))

    def get_meta(self) -> dict:
        """Store-level attrs as a plain dict, as currently stored (another process may have updated them)."""
        self._group = None
        return dict(self.group.attrs.asdict())

    # ------------------------------------------------------------------ reads
    def has_clip(self, clip_id: str, fingerprint: str | None = None) -> bool:
        """True iff the clip is complete and (when given) was written with this fingerprint."""
        g = self._clip_group(clip_id)
        if g is None:
            return False
        return fingerprint is None or g.attrs.get("fingerprint") == fingerprint

    def read_attrs(self, clip_id: str) -> dict:
        """Attrs of a complete clip (includes complete, fingerprint, n_frames)."""
        return dict(self._require_clip(clip_id).attrs.asdict())

    def keys(self, clip_id: str) -> list[str]:
        """Array keys stored for a complete clip."""
        return sorted(self._require_clip(clip_id).array_keys())

    def _array(self, clip_id: str, key: str) -> zarr.Array:
        g = self._require_clip(clip_id)
        try:
            node = g[key]
        except KeyError:
            raise KeyError(
                f"clip {clip_id!r} in {self.url} has no array {key!r}; has {sorted(g.array_keys())}"
            ) from None
        if not isinstance(node, zarr.Array):
            raise KeyError(f"{key!r} in clip {clip_id!r} is not an array")
        return node

    def array(self, clip_id: str, key: str) -> zarr.Array:
        """Lazy zarr handle of one array of a complete clip (for callers that slice it many times)."""
        return self._array(clip_id, key)

    def read_clip(self, clip_id: str, keys: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """All (or the named) arrays of a complete clip; KeyError naming the clip if missing/incomplete."""
        g = self._require_clip(clip_id)
        names = sorted(g.array_keys()) if keys is None else list(keys)
        return {k: np.asarray(self._array(clip_id, k)[...]) for k in names}

    def shape(self, clip_id: str, key: str) -> tuple[int, ...]:
        """Shape of one array without reading its data."""
        return tuple(self._array(clip_id, key).shape)

    def read_slice(self, clip_id: str, key: str, start: int, stop: int) -> np.ndarray:
        """Frames [start, stop) along axis 0, reading only the chunks that overlap."""
        z = self._array(clip_id, key)
        if z.ndim == 0:
            raise ValueError(f"array {key!r} of clip {clip_id!r} is scalar; cannot slice frames")
        n = z.shape[0]
        if not (0 <= start <= stop <= n):
            raise ValueError(f"slice [{start}, {stop}) out of range for {clip_id!r}/{key!r} with {n} frames")
        return np.asarray(z[start:stop])

    def clip_ids(self, complete_only: bool = True) -> list[str]:
        """Sorted clip ids; partial clips are included only with complete_only=False."""
        try:
            clips = self.group[CLIPS_GROUP]
        except KeyError:
            return []
        out = []
        for name in clips.group_keys():
            if not complete_only or self._clip_group(name) is not None:
                out.append(name)
        return sorted(out)
