"""Per-family Zarr v3 feature stores with crash-safe, per-clip writes, local or on object storage.

Layout: ``{root}/{family}.zarr`` holds a group ``clips/<clip_id>`` per clip, one array per feature key,
chunked along time (axis 0) inside one shard per array (one object per clip array). A clip counts as
present only once its group metadata carries ``complete: True``; that object is written after every
array, so a writer killed midway leaves a clip that readers treat as absent. The group metadata also
holds its arrays' metadata (consolidated), so reading a clip array costs the group object and the shard.
Small files that belong with the stores (k-means models, failure records, and with ``features_url`` the
manifest and split: ``storage.shared``) live beside them under the same root (``StoreRoot``), so another
machine needs only the root URL and the storage options. Which stores exist and what their arrays hold
is declared by the feature families (``tasks/features/families/``); this module only lays them out.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import math
import re
import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import numpy as np
import zarr
import zarr.codecs
from zarr.errors import ContainsGroupError, NodeTypeValidationError
from zarr.storage import FsspecStore, LocalStore, MemoryStore, StorePath

from emotalker.configs.secrets import redact_secrets
from emotalker.storage import zarr_internals
from emotalker.storage.files import atomic_path, file_lock

if TYPE_CHECKING:
    from emotalker.configs.schema import PathsConfig

CLIPS_GROUP = "clips"
TIME_CHUNK = 256  # frames per chunk along axis 0 (~10 s at 25 fps)
MAX_CHUNK_BYTES = 16 << 20  # shrink the time chunk for very wide rows
_RESERVED_ATTRS = ("complete", "fingerprint", "checksums")


class CorruptClipError(ValueError):
    """A stored clip array does not read back as written (damaged or missing shard on disk)."""


def array_checksum(arr: np.ndarray) -> str:
    """Checksum of an array's dtype, shape and values, stored beside each clip array when it is written.

    A lost shard reads back as fill values and flipped bytes may decode to wrong numbers without any
    codec error, so reads compare the decoded values with this.
    """
    a = np.ascontiguousarray(arr)
    h = hashlib.blake2b(f"{a.dtype.str}{a.shape}".encode(), digest_size=8)
    h.update(a.view(np.uint8) if a.ndim else a.tobytes())
    return h.hexdigest()


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


def _one_shard(shape: tuple[int, ...], chunks: tuple[int, ...] | str) -> tuple[int, ...] | None:
    """A shard covering the whole array (time rounded up to whole chunks): one object per clip array.

    Window reads still fetch only the chunks they overlap (ranged reads through the shard's index).
    """
    if isinstance(chunks, str):
        return None  # scalars: a single chunk is already one object
    return (math.ceil(max(1, shape[0]) / chunks[0]) * chunks[0], *chunks[1:])


# fsspec backends whose defaults cost requests on these small objects: s3fs sends a HEAD before every
# whole-object GET (to split large ones, max_concurrency > 1), and s3fs/gcsfs cache listings, which
# would hide clips written by other processes (Dask workers) from a long-lived reader.
_BACKEND_DEFAULTS: dict[str, dict[str, Any]] = {
    "s3": {"max_concurrency": 1, "use_listings_cache": False},
    "s3a": {"max_concurrency": 1, "use_listings_cache": False},
    "gs": {"use_listings_cache": False},
    "gcs": {"use_listings_cache": False},
}


def _split_root(root: str | Path) -> tuple[str, bool]:
    """(root without trailing '/', is_remote); ``file://`` URLs become plain local paths."""
    root_s = str(root)
    parsed = urlparse(root_s)
    is_url = "://" in root_s and parsed.scheme not in ("", "file")
    if parsed.scheme == "file":
        root_s = parsed.path  # zarr's LocalStore: real directories, proper deletes
    return root_s.rstrip("/") or "/", is_url


class StoreRoot:
    """The folder or fsspec URL holding the family stores, and the small files kept beside them.

    ``storage_options`` go to the fsspec backend (endpoint, region, anonymous access ...); credentials
    come from the environment or the backend's own chain, never from here. The object pickles (Dask).
    """

    def __init__(self, root: str | Path, storage_options: Mapping[str, Any] | None = None):
        self.root, self.is_remote = _split_root(root)
        self.protocol = urlparse(self.root).scheme if self.is_remote else "file"
        self.storage_options = dict(storage_options or {})

    @classmethod
    def from_paths(cls, paths: PathsConfig) -> StoreRoot:
        """Where the config puts the stores: ``paths.features_url`` (with ``paths.storage_options``) or the
        local features folder."""
        return cls(paths.store_root(), paths.storage_options)

    def __repr__(self) -> str:
        return f"StoreRoot({redact_secrets(self.root)!r})"

    def backend_options(self) -> dict[str, Any]:
        """The options handed to fsspec: the backend's request-saving defaults, then the configured ones."""
        return {**_BACKEND_DEFAULTS.get(self.protocol, {}), **self.storage_options}

    def store(self, family: str) -> FeatureStore:
        return FeatureStore(self, family)

    def url(self, relpath: str) -> str:
        """Full path/URL of a file beside the stores (``relpath`` uses '/')."""
        return f"{self.root}/{relpath}"

    def display(self, relpath: str = "") -> str:
        """The location for messages and logs (credentials in the URL masked)."""
        return redact_secrets(self.url(relpath) if relpath else self.root)

    def _fs(self) -> Any:
        import fsspec

        return fsspec.filesystem(self.protocol, **self.backend_options())

    def exists(self, relpath: str) -> bool:
        """Whether a file beside the stores exists (one HEAD on object storage)."""
        if not self.is_remote:
            return Path(self.url(relpath)).exists()
        return bool(self._fs().exists(self.url(relpath)))

    def read_bytes(self, relpath: str) -> bytes | None:
        """The file's content, or None when it does not exist (one GET on object storage)."""
        try:
            if not self.is_remote:
                return Path(self.url(relpath)).read_bytes()
            return bytes(self._fs().cat_file(self.url(relpath)))
        except FileNotFoundError:
            return None

    def write_bytes(self, relpath: str, data: bytes) -> None:
        """Replace the file atomically (local: temp file + rename; object storage: one PUT)."""
        if self.is_remote:
            self._fs().pipe_file(self.url(relpath), data)
            return
        with atomic_path(self.url(relpath)) as tmp:
            tmp.write_bytes(data)

    def upload(self, local: Path, relpath: str) -> None:
        """Copy a local file to ``relpath`` beside the stores."""
        self.write_bytes(relpath, Path(local).read_bytes())

    def local_copy(self, relpath: str, cache_dir: Path) -> Path:
        """A local path holding the file: itself for local roots, else a download into ``cache_dir``."""
        if not self.is_remote:
            return Path(self.url(relpath))
        data = self.read_bytes(relpath)
        if data is None:
            raise FileNotFoundError(f"{self.display(relpath)} not found")
        dest = Path(cache_dir) / relpath
        with atomic_path(dest) as tmp:  # two readers fetching at once never see half a file
            tmp.write_bytes(data)
        return dest

    @contextmanager
    def lock(self, relpath: str) -> Iterator[None]:
        """Exclusive ``fcntl`` lock beside a local file; a no-op on object storage (one writer per file)."""
        if self.is_remote:
            yield
            return
        p = Path(self.url(relpath))
        with file_lock(p.with_name(f".{p.name}.lock")):
            yield


def feature_store(paths: PathsConfig, family: str) -> FeatureStore:
    """The family's store where the config puts it, opened with ``paths.storage_options``."""
    return StoreRoot.from_paths(paths).store(family)


class FeatureStore:
    """One Zarr v3 store per feature family; per-clip atomic writes and frame-range reads.

    ``root`` may be a local path, a ``file://`` URL (opened as a local store), any fsspec URL
    (``memory://``, ``s3://`` ...; opened with ``storage_options``) or a ``StoreRoot``. The object pickles
    cheaply (the zarr handle is reopened lazily), so it can be shipped to Dask and DataLoader workers.
    """

    def __init__(
        self, root: str | Path | StoreRoot, family: str, storage_options: Mapping[str, Any] | None = None
    ):
        if not isinstance(family, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", family):
            raise ValueError(f"invalid feature store name {family!r}: use lower-case letters, digits, '_'")
        self.family = family
        self.location = root if isinstance(root, StoreRoot) else StoreRoot(root, storage_options)
        self.storage_options = self.location.storage_options
        self._is_url = self.location.is_remote
        self.root = self.location.root
        self.url = f"{self.root}/{family}.zarr"
        self._group: zarr.Group | None = None
        self._root: StorePath | None = None
        self._clips_ready = False
        self._verified: set[tuple[str, str, str]] = set()  # (clip, array, checksum) read back intact

    # ------------------------------------------------------------------ plumbing
    @property
    def display_url(self) -> str:
        """The store's URL for messages and logs (credentials in it masked)."""
        return redact_secrets(self.url)

    def __repr__(self) -> str:
        return f"FeatureStore({self.display_url!r})"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_group"] = None
        state["_root"] = None
        state["_clips_ready"] = False
        state["_verified"] = set()
        return state

    @property
    def group(self) -> zarr.Group:
        """Root group of the store (created on first use)."""
        if self._group is None:
            kwargs: dict[str, Any] = {"zarr_format": 3}
            if self._is_url:
                kwargs["storage_options"] = self.location.backend_options() or None
            else:
                Path(self.url).parent.mkdir(parents=True, exist_ok=True)
            try:
                try:
                    self._group = zarr.open_group(self.url, mode="a", **kwargs)
                except ContainsGroupError:
                    # another writer created the root between zarr's "exists?" check and its create
                    self._group = zarr.open_group(self.url, mode="a", **kwargs)
            except (OSError, ValueError, TypeError) as exc:
                raise type(exc)(
                    f"cannot open feature store {self.display_url}: {redact_secrets(str(exc))}"
                ) from None
        return self._group

    def _root_path(self) -> StorePath:
        """The store's root as a zarr ``StorePath``, without reading (or creating) its group metadata:
        clip reads and writes address their own objects, so a worker's first write costs no request."""
        if self._group is not None:
            return self._group.store_path
        if self._root is None:
            if self._is_url:
                store = FsspecStore.from_url(self.url, storage_options=self.location.backend_options())
            else:
                store = LocalStore(self.url)
            self._root = StorePath(store)
        return self._root

    def ensure_clips_group(self) -> None:
        """Write the (attribute-less) ``clips`` group metadata once per instance: one PUT, where zarr's
        ``require_group`` would first probe for it. A flow calls it once before its writers run, so
        writes with ``replace=False`` need not."""
        if self._clips_ready:
            return
        empty: dict[str, Any] = {}
        zarr.create_group(MemoryStore(empty), zarr_format=3)
        sp = self.group.store_path  # creates the store's root group when it is new
        zarr_internals.run(sp.store.set(f"{sp.path}/{CLIPS_GROUP}/zarr.json".lstrip("/"), empty["zarr.json"]))
        self._clips_ready = True

    def _clip_group(self, clip_id: str) -> zarr.Group | None:
        """The clip's group if it exists and is complete, else None (one metadata read)."""
        _check_clip_id(clip_id)
        try:
            sp = self._root_path() / f"{CLIPS_GROUP}/{clip_id}"
            node = zarr.Group(zarr_internals.run(zarr.AsyncGroup.open(sp, zarr_format=3)))
        except (KeyError, FileNotFoundError, json.JSONDecodeError, ValueError, NodeTypeValidationError):
            return None
        if node.attrs.get("complete") is not True:
            return None
        return node

    def _require_clip(self, clip_id: str) -> zarr.Group:
        g = self._clip_group(clip_id)
        if g is None:
            raise KeyError(f"clip {clip_id!r} is missing or incomplete in {self.display_url}")
        return g

    @contextmanager
    def _write_lock(self, shared: bool = False) -> Iterator[None]:
        """Exclusive ``file_lock`` on ``<family>.zarr.lock`` for local stores (no-op for remote URLs).

        Two writers of one clip (two feature flows on the same stores, or two Dask workers) would
        otherwise delete each other's half-written group and mark a mix of both as complete. Whole-clip
        reads take it shared, so they never see one version's metadata with another's arrays.
        """
        if self._is_url:
            yield
            return
        with file_lock(self.url + ".lock", shared=shared):
            yield

    # ------------------------------------------------------------------ writes
    def write_clip(
        self,
        clip_id: str,
        arrays: dict[str, np.ndarray],
        attrs: dict | None = None,
        fingerprint: str | None = None,
        replace: bool = True,
    ) -> None:
        """Write all arrays of a clip, then mark it complete (attrs last), replacing any earlier version.

        ``n_frames`` defaults to the first dimension of the first non-scalar array unless given in ``attrs``.
        ``replace=False``: the caller knows nothing of the clip is stored (it was not among
        ``clip_ids(complete_only=False)``) and the clips group exists (``ensure_clips_group``), so the
        listing that clears an earlier version and the clips-group PUT are skipped: one PUT per object.
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
        final["checksums"] = {k: array_checksum(a) for k, a in prepared.items()}
        objects = _encode_clip(prepared, final)
        prefix = f"{CLIPS_GROUP}/{clip_id}"
        with self._write_lock():
            if replace:
                self.ensure_clips_group()
            sp = self._root_path()
            zarr_internals.run(_commit_clip(sp.store, sp.path, prefix, objects, replace))

    def delete_clip(self, clip_id: str) -> None:
        """Remove a clip (complete or partial); no error if absent."""
        _check_clip_id(clip_id)
        sp = self.group.store_path
        with self._write_lock():
            zarr_internals.run(_delete_prefix(sp.store, f"{sp.path}/{CLIPS_GROUP}/{clip_id}".lstrip("/")))

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

        fs, path = fsspec.core.url_to_fs(self.url, **self.location.backend_options())
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

    def clip_fingerprints(self, clip_ids: list[str]) -> dict[str, str | None]:
        """Fingerprint of each complete clip among ``clip_ids`` (missing ones left out)."""
        out = {}
        for cid in clip_ids:
            g = self._clip_group(cid)
            if g is not None:
                out[cid] = g.attrs.get("fingerprint")
        return out

    def read_attrs(self, clip_id: str) -> dict:
        """Attrs of a complete clip (includes complete, fingerprint, n_frames; not the arrays' checksums)."""
        attrs = dict(self._require_clip(clip_id).attrs.asdict())
        attrs.pop("checksums", None)
        return attrs

    def keys(self, clip_id: str) -> list[str]:
        """Array keys stored for a complete clip."""
        return sorted(self._require_clip(clip_id).array_keys())

    def _array(
        self, clip_id: str, key: str, group: zarr.Group | None = None, verify: bool = True
    ) -> zarr.Array:
        """One array of a complete clip; the first access in this process checks it against its checksum
        (partial reads then need no second full read)."""
        g = self._require_clip(clip_id) if group is None else group
        try:
            node = g[key]
        except KeyError:
            raise KeyError(
                f"clip {clip_id!r} in {self.display_url} has no array {key!r}; has {sorted(g.array_keys())}"
            ) from None
        if not isinstance(node, zarr.Array):
            raise KeyError(f"{key!r} in clip {clip_id!r} is not an array")
        if verify:
            self._checked(clip_id, key, g, node)
        return node

    def _corrupt(self, clip_id: str, key: str, why: str) -> CorruptClipError:
        return CorruptClipError(
            f"{self.family} store: clip {clip_id!r} array {key!r} is corrupt ({why}) in {self.display_url}; "
            "rerun the features flow with --verify to recompute it"
        )

    def _checked(
        self, clip_id: str, key: str, group: zarr.Group, node: zarr.Array, data: np.ndarray | None = None
    ) -> np.ndarray | None:
        """``data`` (or the array read whole) after checking it against the checksum written with it.

        Clips written before checksums were stored are read as they are.
        """
        expected = (group.attrs.get("checksums") or {}).get(key)
        if data is None and (expected is None or (clip_id, key, expected) in self._verified):
            return None
        if data is None:
            data = self._decode(clip_id, key, node)
        if expected is not None:
            if array_checksum(data) != expected:
                raise self._corrupt(clip_id, key, "its values differ from the checksum written with them")
            self._verified.add((clip_id, key, expected))
        return data

    def _decode(self, clip_id: str, key: str, node: zarr.Array, sel: Any = Ellipsis) -> np.ndarray:
        """Read ``node[sel]``; a shard that cannot be decoded is reported naming the clip and array."""
        try:
            return np.asarray(node[sel])
        except (ValueError, RuntimeError, OSError, EOFError) as exc:
            raise self._corrupt(clip_id, key, f"{type(exc).__name__}: {exc}") from None

    def array(self, clip_id: str, key: str) -> zarr.Array:
        """Lazy zarr handle of one array of a complete clip (for callers that slice it many times),
        checked against its checksum on first use."""
        return self._array(clip_id, key)

    def read_clip(self, clip_id: str, keys: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """All (or the named) arrays of a complete clip, each checked against its checksum; KeyError
        naming the clip if missing/incomplete, CorruptClipError naming clip and array if damaged."""
        with self._write_lock(shared=True):
            g = self._require_clip(clip_id)
            names = sorted(g.array_keys()) if keys is None else list(keys)
            out = {}
            for k in names:
                node = self._array(clip_id, k, g, verify=False)
                out[k] = self._checked(clip_id, k, g, node, self._decode(clip_id, k, node))
            return out

    def verify_clip(self, clip_id: str) -> list[str]:
        """Arrays of a complete clip that do not read back as written (empty: intact), reading each whole."""
        bad = []
        with self._write_lock(shared=True):
            g = self._require_clip(clip_id)
            for k in sorted(g.array_keys()):
                self._verified.discard((clip_id, k, (g.attrs.get("checksums") or {}).get(k)))
                try:
                    self._array(clip_id, k, g)
                except CorruptClipError:
                    bad.append(k)
        return bad

    def shape(self, clip_id: str, key: str) -> tuple[int, ...]:
        """Shape of one array without reading its data."""
        return tuple(self._array(clip_id, key, verify=False).shape)

    def read_slice(self, clip_id: str, key: str, start: int, stop: int) -> np.ndarray:
        """Frames [start, stop) along axis 0, reading only the chunks that overlap."""
        z = self._array(clip_id, key)
        if z.ndim == 0:
            raise ValueError(f"array {key!r} of clip {clip_id!r} is scalar; cannot slice frames")
        n = z.shape[0]
        if not (0 <= start <= stop <= n):
            raise ValueError(f"slice [{start}, {stop}) out of range for {clip_id!r}/{key!r} with {n} frames")
        return self._decode(clip_id, key, z, slice(start, stop))

    def clip_ids(self, complete_only: bool = True) -> list[str]:
        """Sorted clip ids (one listing, then one metadata read per clip); partial clips are included
        only with complete_only=False."""
        sp = self._root_path()

        async def names() -> list[str]:
            return [n async for n in sp.store.list_dir(f"{sp.path}/{CLIPS_GROUP}".lstrip("/"))]

        out = []
        for name in zarr_internals.run(names()):
            if name == "zarr.json" or name.startswith((".", "__")):
                continue
            if not complete_only or self._clip_group(name) is not None:
                out.append(name)
        return sorted(out)


def _encode_clip(arrays: dict[str, np.ndarray], attrs: dict[str, Any]) -> dict[str, Any]:
    """The clip group's objects (key -> zarr Buffer), encoded in memory without touching the store.

    Each array is one shard of time chunks; the group's ``zarr.json`` carries the attrs and its arrays'
    metadata (consolidated), so readers need no per-array metadata request.
    """
    objects: dict[str, Any] = {}
    g = zarr.create_group(MemoryStore(objects), zarr_format=3)
    for key, arr in arrays.items():
        chunks = _time_chunks(arr.shape, arr.dtype.itemsize)
        z = g.create_array(
            key,
            shape=arr.shape,
            dtype=arr.dtype,
            chunks=chunks,
            shards=_one_shard(arr.shape, chunks),
            compressors=_compressor(),
            fill_value=0,
        )
        if arr.size:
            z[...] = arr
    g.attrs.put(attrs)
    with warnings.catch_warnings():  # "not part of the v3 spec": each array keeps its own zarr.json too
        warnings.filterwarnings("ignore", "Consolidated metadata", category=UserWarning)
        zarr.consolidate_metadata(g.store)
    return objects


async def _commit_clip(store: Any, base: str, prefix: str, objects: dict[str, Any], replace: bool) -> None:
    """Write a clip: (``replace``: one listing, deleting an earlier version first) the arrays' objects,
    then the group metadata last: the commit point. No existence probes."""
    root = f"{base}/{prefix}".lstrip("/")
    if replace:  # the old version stops being complete before anything is written
        await _delete_prefix(store, root)
    await asyncio.gather(*(store.set(f"{root}/{k}", v) for k, v in objects.items() if k != "zarr.json"))
    await store.set(f"{root}/zarr.json", objects["zarr.json"])


async def _any_under(store: Any, root: str) -> bool:
    """Whether any object lies under ``root`` (one listing request on object storage).

    A plain fsspec ``find`` of an empty prefix on s3fs adds a HEAD and a second listing to tell a file
    from a missing directory; a server-side ``prefix`` filter on the parent needs only the listing.
    """
    fs = getattr(store, "fs", None)
    if fs is not None and "prefix" in inspect.signature(fs._find).parameters and "/" in root:
        parent, name = root.rsplit("/", 1)
        return bool(await fs._find(f"{store.path}/{parent}", prefix=f"{name}/", detail=False))
    return bool([k async for k in store.list_prefix(root + "/")])


async def _delete_prefix(store: Any, root: str) -> None:
    """Delete every object under ``root`` (one listing; the deletes only when something is there).

    The group metadata (the commit point) goes first and alone: a recursive or bulk delete removes
    objects in no set order, so a writer killed midway could otherwise leave a clip marked complete
    with some of its shards gone, which would read back as fill values.
    """
    if await _any_under(store, root):
        await store.delete(f"{root}/zarr.json")
        await store.delete_dir(root)
