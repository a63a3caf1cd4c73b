"""K-means audio tokens over HuBERT content features (fairseq ``simple_kmeans`` settings).

The model is a scikit-learn MiniBatchKMeans saved with joblib plus a JSON sidecar (``<path>.json``)
holding the fit config and a fingerprint of the centres, so a stored token stream can be tied to the
exact codebook that produced it. scikit-learn and joblib are imported only where a model is fitted, saved
or loaded: the feature flows' freshness checks only ask for a model's path.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from emotalker.storage.files import atomic_path, write_json_atomic

if TYPE_CHECKING:
    from sklearn.cluster import MiniBatchKMeans

    from emotalker.storage.zarr_store import StoreRoot


class KMeansFileError(FileNotFoundError):
    """Missing k-means file, or one whose centres do not match its sidecar fingerprint."""


def _as_2d(features: np.ndarray, name: str = "features") -> np.ndarray:
    x = np.asarray(features)
    if x.ndim != 2:
        raise ValueError(f"{name} must be (N, d), got shape {x.shape}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or inf")
    return x


def fit_kmeans(
    features: np.ndarray,
    *,
    k: int = 200,
    seed: int = 0,
    batch_size: int = 10_000,
    max_iter: int = 100,
    n_init: int = 20,
    max_no_improvement: int = 100,
    tol: float = 0.0,
    reassignment_ratio: float = 0.0,
) -> MiniBatchKMeans:
    """Fit MiniBatchKMeans (k-means++ init) with fairseq's HuBERT-label defaults; deterministic per seed."""
    from sklearn.cluster import MiniBatchKMeans

    x = _as_2d(features)
    if k < 2:
        raise ValueError(f"k must be >= 2, got {k}")
    if k > np.iinfo(np.int16).max:
        raise ValueError(f"k={k} does not fit the int16 token dtype")
    if x.shape[0] < k:
        raise ValueError(f"k={k} clusters need at least {k} feature frames, got {x.shape[0]}")
    km = MiniBatchKMeans(
        n_clusters=k,
        init="k-means++",
        max_iter=max_iter,
        batch_size=batch_size,
        tol=tol,
        max_no_improvement=max_no_improvement,
        init_size=None,
        n_init=n_init,
        reassignment_ratio=reassignment_ratio,
        random_state=seed,
        compute_labels=False,
        verbose=0,
    )
    km.fit(x.astype(np.float32, copy=False))
    return km


def kmeans_fingerprint(km: MiniBatchKMeans) -> str:
    """sha256 of the float32 centres (shape included): identifies the codebook independent of pickling."""
    c = np.ascontiguousarray(km.cluster_centers_, dtype=np.float32)
    h = hashlib.sha256(f"{c.shape}".encode())
    h.update(c.tobytes())
    return h.hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def save_kmeans(km: MiniBatchKMeans, path: str | Path, config: dict[str, Any] | None = None) -> Path:
    """joblib dump (atomic rename) + ``<path>.json`` with the config, k, dim and fingerprint."""
    import joblib

    if not hasattr(km, "cluster_centers_"):
        raise ValueError("k-means model is not fitted")
    p = Path(path)
    with atomic_path(p) as tmp:
        joblib.dump(km, tmp)
    meta = {
        "k": int(km.cluster_centers_.shape[0]),
        "dim": int(km.cluster_centers_.shape[1]),
        "fingerprint": kmeans_fingerprint(km),
        "config": config or {},
    }
    write_json_atomic(_sidecar(p), meta, indent=2, sort_keys=True, default=str)
    return p


def load_kmeans_meta(path: str | Path) -> dict[str, Any]:
    """The JSON sidecar written by ``save_kmeans``."""
    side = _sidecar(Path(path))
    if not side.is_file():
        raise KMeansFileError(f"k-means sidecar not found: {side}")
    return json.loads(side.read_text())


def load_kmeans(path: str | Path) -> MiniBatchKMeans:
    """Load a saved model; when the sidecar exists its fingerprint must match the loaded centres."""
    import joblib

    p = Path(path)
    if not p.is_file():
        raise KMeansFileError(f"k-means model not found: {p}")
    km = joblib.load(p)
    if not hasattr(km, "cluster_centers_"):
        raise KMeansFileError(f"{p} does not hold a fitted k-means model")
    if _sidecar(p).is_file():
        expected = load_kmeans_meta(p).get("fingerprint")
        if expected and expected != kmeans_fingerprint(km):
            raise KMeansFileError(f"{p}: centres do not match the fingerprint in {_sidecar(p)}")
    return km


def kmeans_relpath(fp: str) -> str:
    """Where a k-means model lives relative to the feature stores' root (recorded in the tokens store)."""
    return f"kmeans/kmeans-{fp}.joblib"


def store_kmeans(km: MiniBatchKMeans, root: StoreRoot, relpath: str, config: dict[str, Any]) -> None:
    """Save the model and its sidecar beside the feature stores (local folder or object storage)."""
    if not root.is_remote:
        save_kmeans(km, root.url(relpath), config)
        return
    with tempfile.TemporaryDirectory() as tmp:
        local = save_kmeans(km, Path(tmp) / Path(relpath).name, config)
        root.upload(_sidecar(local), relpath + ".json")
        root.upload(local, relpath)  # the model last: its presence means the pair is complete


def fetch_kmeans(root: StoreRoot, relpath: str) -> MiniBatchKMeans:
    """Load a model kept beside the feature stores, checked against its sidecar's fingerprint."""
    if not root.is_remote:
        return load_kmeans(root.url(relpath))
    with tempfile.TemporaryDirectory() as tmp:
        local = root.local_copy(relpath, Path(tmp))
        sidecar = root.read_bytes(relpath + ".json")  # one GET, None when absent
        if sidecar is not None:
            _sidecar(local).write_bytes(sidecar)
        return load_kmeans(local)


def recorded_kmeans(root: StoreRoot, meta: dict[str, Any]) -> MiniBatchKMeans:
    """The model the tokens store's metadata names: a path relative to the stores' root, or (stores
    written before models moved beside them) an absolute local path, tried under the root by name too."""
    rel = meta.get("kmeans_path")
    if not rel:
        raise KMeansFileError("no k-means model recorded in the tokens store: run the audio-features flow")
    if not Path(rel).is_absolute():
        if not root.exists(rel):
            raise KMeansFileError(f"k-means model {root.display(rel)} not found: rerun audio-features")
        return fetch_kmeans(root, rel)
    if Path(rel).is_file():
        return load_kmeans(rel)
    moved = kmeans_relpath(Path(rel).name.removeprefix("kmeans-").removesuffix(".joblib"))
    if root.exists(moved):
        return fetch_kmeans(root, moved)
    raise KMeansFileError(f"k-means model {rel} (an older, absolute record) not found: rerun audio-features")


def apply_kmeans(km: MiniBatchKMeans, feats: np.ndarray, chunk: int = 65_536) -> np.ndarray:
    """Nearest-centre token per frame, int16 ``(n,)``; computed in chunks to bound memory."""
    centres = np.asarray(km.cluster_centers_, dtype=np.float32)
    x = np.asarray(feats)
    if x.ndim != 2 or x.shape[1] != centres.shape[1]:
        raise ValueError(f"feats must be (n, {centres.shape[1]}), got shape {x.shape}")
    out = np.empty(x.shape[0], dtype=np.int16)
    c_sq = (centres.astype(np.float64) ** 2).sum(axis=1)
    for s in range(0, x.shape[0], chunk):
        xb = x[s : s + chunk].astype(np.float64)
        # ||x||^2 is constant per row, so argmin over -2 x.c + ||c||^2 suffices.
        d = c_sq[None, :] - 2.0 * (xb @ centres.T.astype(np.float64))
        out[s : s + chunk] = np.argmin(d, axis=1).astype(np.int16)
    return out


def token_embeddings(km: MiniBatchKMeans, tokens: np.ndarray) -> np.ndarray:
    """Cluster centre per token, float32 ``(n, d)`` (the content input of the audio encoder)."""
    t = np.asarray(tokens)
    k = km.cluster_centers_.shape[0]
    if t.ndim != 1:
        raise ValueError(f"tokens must be 1-D, got shape {t.shape}")
    if t.size and (t.min() < 0 or t.max() >= k):
        raise ValueError(f"tokens must lie in [0, {k}), got range [{t.min()}, {t.max()}]")
    return np.asarray(km.cluster_centers_, dtype=np.float32)[t.astype(np.int64)]


def sample_frames(arrays: Sequence[np.ndarray], max_frames: int, seed: int = 0) -> np.ndarray:
    """Deterministic uniform sample (without replacement) of up to ``max_frames`` rows across clips.

    Rows keep their original order; all rows are returned when there are no more than ``max_frames``.
    The full concatenation is never built, so this works on large lists of per-clip arrays.
    """
    if max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    arrs = [np.asarray(a) for a in arrays]
    arrs = [a for a in arrs if a.shape[0] > 0]
    if not arrs:
        raise ValueError("no feature frames to sample")
    dims = {a.shape[1:] for a in arrs}
    if len(dims) != 1 or any(a.ndim != 2 for a in arrs):
        raise ValueError(f"all arrays must be (n_i, d) with one d, got trailing shapes {sorted(dims)}")
    counts = np.array([a.shape[0] for a in arrs], dtype=np.int64)
    total = int(counts.sum())
    if total <= max_frames:
        return np.concatenate(arrs, axis=0).astype(np.float32, copy=False)
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(total, size=max_frames, replace=False))
    offsets = np.concatenate([[0], np.cumsum(counts)])
    which = np.searchsorted(offsets, idx, side="right") - 1
    out = np.empty((max_frames, arrs[0].shape[1]), dtype=np.float32)
    for a_i in np.unique(which):
        sel = which == a_i
        out[sel] = arrs[a_i][idx[sel] - offsets[a_i]]
    return out
