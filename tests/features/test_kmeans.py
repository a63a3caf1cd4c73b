"""K-means tokens: cluster recovery, seed determinism, save/load with fingerprint, sampling."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from emotalker.tasks.features.kmeans import (
    KMeansFileError,
    apply_kmeans,
    fit_kmeans,
    load_kmeans,
    load_kmeans_meta,
    sample_frames,
    save_kmeans,
    token_embeddings,
)

FAST = {"batch_size": 256, "max_iter": 20, "n_init": 2}


def _blobs(
    k: int = 5, n_per: int = 60, d: int = 8, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, d)) * 20
    labels = np.repeat(np.arange(k), n_per)
    x = centres[labels] + rng.standard_normal((k * n_per, d)) * 0.3
    perm = rng.permutation(x.shape[0])
    return x[perm].astype(np.float32), labels[perm], centres


def test_recovers_separated_clusters() -> None:
    x, labels, centres = _blobs()
    km = fit_kmeans(x, k=5, seed=0, **FAST)
    tokens = apply_kmeans(km, x)
    assert tokens.dtype == np.int16 and tokens.shape == (x.shape[0],)
    # Each true cluster maps to exactly one token and vice versa.
    mapping = {int(t): set(labels[tokens == t].tolist()) for t in np.unique(tokens)}
    assert len(mapping) == 5 and all(len(v) == 1 for v in mapping.values())
    emb = token_embeddings(km, tokens)
    assert emb.dtype == np.float32 and emb.shape == x.shape
    np.testing.assert_allclose(emb, centres[labels].astype(np.float32), atol=0.3)


def test_apply_matches_sklearn_predict() -> None:
    x, _, _ = _blobs(k=6, seed=3)
    km = fit_kmeans(x, k=6, seed=1, **FAST)
    q = np.random.default_rng(9).standard_normal((500, 8)).astype(np.float32) * 20
    np.testing.assert_array_equal(apply_kmeans(km, q, chunk=37), km.predict(q))


def test_seed_determinism() -> None:
    x, _, _ = _blobs(k=4, seed=2)
    a = fit_kmeans(x, k=4, seed=7, **FAST).cluster_centers_
    b = fit_kmeans(x, k=4, seed=7, **FAST).cluster_centers_
    np.testing.assert_array_equal(a, b)


def test_save_load_round_trip(tmp_path: Path) -> None:
    x, _, _ = _blobs()
    km = fit_kmeans(x, k=5, seed=0, **FAST)
    p = save_kmeans(km, tmp_path / "km" / "content.joblib", {"k": 5, "layer": 9})
    meta = load_kmeans_meta(p)
    assert (
        meta["k"] == 5
        and meta["dim"] == 8
        and meta["config"]["layer"] == 9
        and len(meta["fingerprint"]) == 64
    )
    km2 = load_kmeans(p)
    np.testing.assert_array_equal(km2.cluster_centers_, km.cluster_centers_)
    np.testing.assert_array_equal(apply_kmeans(km2, x), apply_kmeans(km, x))
    # A sidecar that does not describe this model is caught.
    side = p.with_name(p.name + ".json")
    bad = json.loads(side.read_text())
    bad["fingerprint"] = "0" * 64
    side.write_text(json.dumps(bad))
    with pytest.raises(KMeansFileError, match="fingerprint"):
        load_kmeans(p)
    with pytest.raises(KMeansFileError, match="missing.joblib"):
        load_kmeans(tmp_path / "missing.joblib")


def test_bad_inputs() -> None:
    x, _, _ = _blobs(k=2, n_per=5)
    with pytest.raises(ValueError, match="k=20 clusters need at least 20"):
        fit_kmeans(x, k=20, **FAST)
    with pytest.raises(ValueError, match=r"\(N, d\)"):
        fit_kmeans(x[:, 0], k=2)
    km = fit_kmeans(x, k=2, seed=0, **FAST)
    with pytest.raises(ValueError, match=r"\(n, 8\)"):
        apply_kmeans(km, np.zeros((3, 4), np.float32))
    with pytest.raises(ValueError, match="tokens must lie"):
        token_embeddings(km, np.array([0, 2]))


def test_sample_frames_deterministic_and_exact() -> None:
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((n, 3)).astype(np.float32) for n in (10, 0, 25, 7)]
    full = np.concatenate(arrays)
    a = sample_frames(arrays, 15, seed=4)
    b = sample_frames(arrays, 15, seed=4)
    c = sample_frames(arrays, 15, seed=5)
    assert a.shape == (15, 3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # Every sampled row is a distinct row of the concatenation, in original order.
    rows = [int(np.flatnonzero((full == r).all(axis=1))[0]) for r in a]
    assert len(set(rows)) == 15 and rows == sorted(rows)
    np.testing.assert_array_equal(sample_frames(arrays, 1000, seed=0), full)
    with pytest.raises(ValueError, match="no feature frames"):
        sample_frames([np.zeros((0, 3))], 5)
