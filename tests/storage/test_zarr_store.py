"""FeatureStore: round trips, crash safety (complete marker written last), fingerprints, URLs."""

from __future__ import annotations

import pickle
import uuid
from pathlib import Path

import numpy as np
import pytest
import zarr

from emotalker.storage.zarr_store import TIME_CHUNK, FeatureStore


def _arrays(n: int = 300, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "coeff": rng.standard_normal((n, 257)).astype(np.float32),
        "valid": rng.random(n) > 0.1,
        "tokens": rng.integers(0, 200, size=n, dtype=np.int64),
    }


@pytest.fixture()
def store(tmp_path) -> FeatureStore:
    return FeatureStore(tmp_path / "features", "face")


def test_round_trip_local(store: FeatureStore, tmp_path) -> None:
    arrs = _arrays()
    store.write_clip("M003_front_angry_level_1_001", arrs, attrs={"fps": 25}, fingerprint="fp1")
    assert (tmp_path / "features" / "face.zarr").is_dir()
    assert store.has_clip("M003_front_angry_level_1_001")
    out = store.read_clip("M003_front_angry_level_1_001")
    assert set(out) == set(arrs)
    for k, v in arrs.items():
        np.testing.assert_array_equal(out[k], v)
        assert out[k].dtype == v.dtype
    only = store.read_clip("M003_front_angry_level_1_001", keys=["tokens"])
    assert list(only) == ["tokens"]
    attrs = store.read_attrs("M003_front_angry_level_1_001")
    assert attrs == {"fps": 25, "n_frames": 300, "fingerprint": "fp1", "complete": True}
    assert store.clip_ids() == ["M003_front_angry_level_1_001"]


def test_chunked_along_time_and_compressed(store: FeatureStore) -> None:
    store.write_clip("c", {"coeff": np.zeros((1000, 257), np.float32)})
    z = store.array("c", "coeff")
    assert z.chunks == (TIME_CHUNK, 257)
    assert z.metadata.zarr_format == 3
    assert len(z.compressors) == 1


def test_read_slice_matches_read_clip(store: FeatureStore) -> None:
    arrs = _arrays(n=700)
    store.write_clip("c", arrs)
    full = store.read_clip("c")
    for start, stop in [(0, 96), (200, 300), (250, 260), (604, 700), (5, 5)]:
        np.testing.assert_array_equal(store.read_slice("c", "coeff", start, stop), full["coeff"][start:stop])
        np.testing.assert_array_equal(store.read_slice("c", "valid", start, stop), full["valid"][start:stop])
    with pytest.raises(ValueError, match="out of range"):
        store.read_slice("c", "coeff", 650, 701)
    with pytest.raises(ValueError, match="out of range"):
        store.read_slice("c", "coeff", -1, 10)
    with pytest.raises(KeyError, match="nope"):
        store.read_slice("c", "nope", 0, 1)


def test_missing_clip_errors_name_the_clip(store: FeatureStore) -> None:
    assert not store.has_clip("ghost")
    assert store.clip_ids() == []
    with pytest.raises(KeyError, match="ghost"):
        store.read_clip("ghost")
    with pytest.raises(KeyError, match="ghost"):
        store.read_attrs("ghost")
    with pytest.raises(KeyError, match="ghost"):
        store.read_slice("ghost", "coeff", 0, 1)


def test_bad_inputs(tmp_path) -> None:
    for bad in ("../face", "Face", ""):
        with pytest.raises(ValueError, match="invalid feature store name"):
            FeatureStore(tmp_path, bad)
    s = FeatureStore(tmp_path, "mel")
    with pytest.raises(ValueError, match="invalid clip_id"):
        s.write_clip("a/b", {"x": np.zeros(3)})
    with pytest.raises(ValueError, match="no arrays"):
        s.write_clip("a", {})
    with pytest.raises(ValueError, match="dtype"):
        s.write_clip("a", {"x": np.array(["a", "b"])})
    with pytest.raises(ValueError, match="reserved"):
        s.write_clip("a", {"x": np.zeros(3)}, attrs={"complete": True})
    assert s.clip_ids(complete_only=False) == []


def test_fingerprint_staleness(store: FeatureStore) -> None:
    store.write_clip("c", {"x": np.arange(10)}, fingerprint="model-v1")
    assert store.has_clip("c")
    assert store.has_clip("c", fingerprint="model-v1")
    assert not store.has_clip("c", fingerprint="model-v2")
    store.write_clip("c", {"x": np.arange(5)}, fingerprint="model-v2")
    assert store.has_clip("c", fingerprint="model-v2")
    assert not store.has_clip("c", fingerprint="model-v1")
    np.testing.assert_array_equal(store.read_clip("c")["x"], np.arange(5))


def test_rewrite_replaces_old_arrays(store: FeatureStore) -> None:
    store.write_clip("c", {"a": np.ones(4), "b": np.ones(4)})
    store.write_clip("c", {"a": np.zeros(6)})
    out = store.read_clip("c")
    assert list(out) == ["a"]
    np.testing.assert_array_equal(out["a"], np.zeros(6))
    assert store.read_attrs("c")["n_frames"] == 6


def test_killed_writer_leaves_clip_absent(store: FeatureStore, monkeypatch) -> None:
    store.write_clip("other", {"x": np.arange(3)})
    store.write_clip("c", _arrays(seed=1), fingerprint="old")  # a complete older version gets replaced
    store_cls = type(store.group.store)  # the writer dies after uploading its first object
    real = store_cls.set
    calls = {"n": 0}

    async def dying(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 1:
            raise RuntimeError("worker killed")
        return await real(self, *args, **kwargs)

    monkeypatch.setattr(store_cls, "set", dying)
    with pytest.raises(RuntimeError, match="killed"):
        store.write_clip("c", _arrays(seed=2), fingerprint="new")
    monkeypatch.setattr(store_cls, "set", real)
    assert calls["n"] > 1

    fresh = FeatureStore(store.root, "face")  # a different reader sees the same
    for s in (store, fresh):
        assert not s.has_clip("c")
        assert not s.has_clip("c", fingerprint="new")
        assert not s.has_clip("c", fingerprint="old")
        with pytest.raises(KeyError, match="'c'"):
            s.read_clip("c")
        with pytest.raises(KeyError, match="'c'"):
            s.read_slice("c", "coeff", 0, 1)
        assert s.clip_ids() == ["other"]
        assert s.clip_ids(complete_only=False) == ["c", "other"]

    arrs = _arrays(seed=3)
    store.write_clip("c", arrs, fingerprint="new")
    assert fresh.has_clip("c", fingerprint="new")
    np.testing.assert_array_equal(fresh.read_clip("c")["coeff"], arrs["coeff"])
    assert fresh.clip_ids() == ["c", "other"]


def test_delete_clip(store: FeatureStore) -> None:
    store.write_clip("a", {"x": np.arange(3)})
    store.write_clip("b", {"x": np.arange(3)})
    store.delete_clip("a")
    store.delete_clip("never-written")
    assert store.clip_ids(complete_only=False) == ["b"]
    assert not store.has_clip("a")


@pytest.mark.parametrize("rewrite", [True, False])
def test_killed_while_deleting_the_old_version_leaves_no_complete_clip(
    store: FeatureStore, monkeypatch: pytest.MonkeyPatch, rewrite: bool
) -> None:
    """A recursive delete removes files in no set order: dying after it took one shard must not leave
    the old version marked complete with that shard read back as fill values."""
    import shutil

    from zarr.storage import LocalStore

    store.write_clip("c", _arrays())

    async def dies_after_one_shard(self: LocalStore, prefix: str) -> None:
        shutil.rmtree(self.root / prefix / "valid")  # the first thing an unlucky rmtree removes
        raise OSError("killed")

    monkeypatch.setattr(LocalStore, "delete_dir", dies_after_one_shard)
    with pytest.raises(OSError, match="killed"):
        if rewrite:
            store.write_clip("c", _arrays(seed=1))
        else:
            store.delete_clip("c")
    assert not store.has_clip("c") and store.clip_ids(complete_only=False) == ["c"]


def test_meta(store: FeatureStore) -> None:
    assert store.get_meta() == {}
    store.set_meta(model_fingerprint="abc", kmeans={"k": np.int64(200)})
    store.set_meta(layer=9)
    again = FeatureStore(store.root, "face")
    assert again.get_meta() == {"model_fingerprint": "abc", "kmeans": {"k": 200}, "layer": 9}


def test_numpy_attrs_are_json_converted(store: FeatureStore) -> None:
    store.write_clip("c", {"x": np.arange(3)}, attrs={"fps": np.float32(25.0), "shape": np.array([1, 2])})
    attrs = store.read_attrs("c")
    assert attrs["fps"] == 25.0 and attrs["shape"] == [1, 2]


def test_memory_url_round_trip() -> None:
    root = f"memory://emotalker-test-{uuid.uuid4().hex}"
    s = FeatureStore(root, "hubert_content")
    arrs = {"feat": np.random.default_rng(0).standard_normal((120, 768)).astype(np.float32)}
    s.write_clip("c1", arrs, fingerprint="f")
    again = FeatureStore(root, "hubert_content")
    assert again.url == f"{root}/hubert_content.zarr"
    assert again.has_clip("c1", fingerprint="f")
    np.testing.assert_array_equal(again.read_clip("c1")["feat"], arrs["feat"])
    np.testing.assert_array_equal(again.read_slice("c1", "feat", 10, 20), arrs["feat"][10:20])
    again.delete_clip("c1")
    assert s.clip_ids(complete_only=False) == []


def test_file_url_round_trip(tmp_path) -> None:
    s = FeatureStore(f"file://{tmp_path}/feats", "tokens")
    s.write_clip("c1", {"tokens": np.arange(50, dtype=np.int16)})
    assert (tmp_path / "feats" / "tokens.zarr" / "clips" / "c1").is_dir()
    local = FeatureStore(tmp_path / "feats", "tokens")
    np.testing.assert_array_equal(local.read_clip("c1")["tokens"], np.arange(50, dtype=np.int16))


def test_pickle_reopens(store: FeatureStore) -> None:
    store.write_clip("c", {"x": np.arange(7)})
    clone = pickle.loads(pickle.dumps(store))
    np.testing.assert_array_equal(clone.read_slice("c", "x", 2, 4), [2, 3])


def test_scalar_and_empty_arrays(store: FeatureStore) -> None:
    store.write_clip("c", {"scale": np.float64(2.5), "empty": np.zeros((0, 4), np.float32)})
    out = store.read_clip("c")
    assert out["scale"].shape == () and float(out["scale"]) == 2.5
    assert out["empty"].shape == (0, 4)
    assert store.read_attrs("c")["n_frames"] == 0


def test_meta_survives_clip_writes(store: FeatureStore) -> None:
    store.set_meta(model_fingerprint="abc")
    store.write_clip("c", {"x": np.arange(3)})
    store.delete_clip("c")
    store.write_clip("d", {"x": np.arange(3)})
    assert FeatureStore(store.root, "face").get_meta() == {"model_fingerprint": "abc"}


def _write_many(root: str, prefix: str, n: int) -> None:
    s = FeatureStore(root, "face")
    for i in range(n):
        s.write_clip(f"{prefix}{i}", {"x": np.full(30, i)}, fingerprint=prefix)


def test_concurrent_writers_different_clips(tmp_path) -> None:
    import multiprocessing as mp

    ctx = mp.get_context("fork")  # zarr resets its IO loop after fork
    procs = [ctx.Process(target=_write_many, args=(str(tmp_path), p, 6)) for p in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    s = FeatureStore(tmp_path, "face")
    assert s.clip_ids() == sorted([f"a{i}" for i in range(6)] + [f"b{i}" for i in range(6)])
    assert s.has_clip("b5", fingerprint="b")
    np.testing.assert_array_equal(s.read_clip("a4")["x"], np.full(30, 4))


def test_root_created_by_another_writer_meanwhile_is_opened_not_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # zarr's open_group(mode="a") checks for the root, then creates it; a concurrent writer can create it in
    # between, and zarr then raises ContainsGroupError (seen with four threads writing one store)
    from zarr.errors import ContainsGroupError

    import emotalker.storage.zarr_store as zs

    real = zarr.open_group
    calls: list[str] = []

    def racing(url, mode, **kw):  # type: ignore[no-untyped-def]
        calls.append(mode)
        if len(calls) == 1:
            real(url, mode="a", **kw)  # the other writer wins the race
            raise ContainsGroupError(f"A group exists in store at path ''. ({url})")
        return real(url, mode=mode, **kw)

    monkeypatch.setattr(zs.zarr, "open_group", racing)
    store = FeatureStore(str(tmp_path / "s"), "face")
    store.write_clip("a", {"x": np.arange(3, dtype=np.float32)}, fingerprint="f")
    assert len(calls) == 2
    np.testing.assert_array_equal(store.read_clip("a")["x"], np.arange(3, dtype=np.float32))
