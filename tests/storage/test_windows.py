"""WindowDataset: window enumeration, alignment across stores, labels, DataLoader batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from emotalker.storage.windows import WindowDataset
from emotalker.storage.zarr_store import FeatureStore

torch.set_num_threads(1)

LENGTHS = {"clipA": 100, "clipB": 40, "clipC": 20, "clipD": 300}


def _face(cid: str, n: int) -> np.ndarray:
    base = sum(map(ord, cid)) * 1000.0
    return (base + np.arange(n * 57, dtype=np.float64).reshape(n, 57)).astype(np.float32)


@pytest.fixture()
def stores(tmp_path) -> tuple[FeatureStore, FeatureStore]:
    face = FeatureStore(tmp_path, "face")
    tokens = FeatureStore(tmp_path, "tokens")
    for cid, n in LENGTHS.items():
        face.write_clip(cid, {"motion": _face(cid, n)})
        tokens.write_clip(cid, {"tokens": (np.arange(n) % 200).astype(np.int64)})
    return face, tokens


def test_window_counts_and_hop(stores) -> None:
    face, _ = stores
    src = {"motion": (face, "motion")}
    ds = WindowDataset(src, list(LENGTHS), window=32)  # hop defaults to 16
    expected = sum((n - 32) // 16 + 1 for n in LENGTHS.values() if n >= 32)
    assert len(ds) == expected == 5 + 1 + 17
    assert ds.skipped == 1 and ds.skipped_ids == ["clipC"]
    assert [ds.window_at(i) for i in range(6)] == [("clipA", s) for s in (0, 16, 32, 48, 64)] + [("clipB", 0)]

    ds8 = WindowDataset(src, ["clipA"], window=32, hop=8)
    assert [s for _, s in (ds8.window_at(i) for i in range(len(ds8)))] == list(range(0, 69, 8))

    exact = WindowDataset(src, ["clipC"], window=20, hop=5)
    assert len(exact) == 1 and exact.skipped == 0
    none = WindowDataset(src, ["clipC"], window=21)
    assert len(none) == 0 and none.skipped == 1


def test_items_match_read_clip(stores) -> None:
    face, tokens = stores
    ds = WindowDataset(
        {"motion": (face, "motion"), "tok": (tokens, "tokens")}, ["clipA", "clipD"], 24, hop=10
    )
    full = {cid: face.read_clip(cid)["motion"] for cid in ("clipA", "clipD")}
    for i in (0, 3, len(ds) - 1, -1):
        item = ds[i]
        cid, start = ds.window_at(i)
        assert item["clip_id"] == cid and item["start"] == start
        assert isinstance(item["motion"], torch.Tensor) and item["motion"].dtype == torch.float32
        assert item["motion"].shape == (24, 57) and item["tok"].shape == (24,)
        np.testing.assert_array_equal(item["motion"].numpy(), full[cid][start : start + 24])
        np.testing.assert_array_equal(item["tok"].numpy(), np.arange(start, start + 24) % 200)
        assert "label" not in item
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_labels_and_transforms(stores) -> None:
    face, _ = stores
    labels = {"clipA": 3, "clipB": 5}
    ds = WindowDataset(
        {"motion": (face, "motion")},
        ["clipA", "clipB"],
        window=40,
        hop=40,
        labels=labels,
        transforms={"motion": lambda a: a[:, :6] * 0},
    )
    assert [ds[i]["label"] for i in range(len(ds))] == [3, 3, 5]
    assert ds[0]["motion"].shape == (40, 6) and float(ds[0]["motion"].abs().sum()) == 0.0
    with pytest.raises(KeyError, match="clipD"):
        WindowDataset({"motion": (face, "motion")}, ["clipD"], window=8, labels=labels)
    with pytest.raises(ValueError, match="unknown source"):
        WindowDataset({"motion": (face, "motion")}, ["clipA"], window=8, transforms={"mel": abs})


def test_dataloader_batches(stores) -> None:
    face, tokens = stores
    ds = WindowDataset(
        {"motion": (face, "motion"), "tok": (tokens, "tokens")},
        ["clipA", "clipB", "clipD"],
        window=32,
        labels={"clipA": 0, "clipB": 1, "clipD": 2},
    )
    batches = list(DataLoader(ds, batch_size=4, shuffle=False))
    first = batches[0]
    assert first["motion"].shape == (4, 32, 57) and first["tok"].shape == (4, 32)
    assert first["tok"].dtype == torch.int64
    assert first["label"].tolist() == [0, 0, 0, 0] and first["label"].dtype == torch.int64
    assert first["clip_id"] == ["clipA"] * 4
    assert sum(b["motion"].shape[0] for b in batches) == len(ds)


def test_dataloader_worker_process(stores) -> None:
    face, _ = stores
    ds = WindowDataset({"motion": (face, "motion")}, ["clipA"], window=50, hop=50)
    ds[0]  # populate the handle cache before pickling/forking
    (batch,) = list(DataLoader(ds, batch_size=2, num_workers=1))
    np.testing.assert_array_equal(batch["motion"].numpy(), _face("clipA", 100).reshape(2, 50, 57))


def test_length_mismatch_uses_min_and_warns_once(tmp_path) -> None:
    face = FeatureStore(tmp_path, "face")
    mel = FeatureStore(tmp_path, "mel")
    for cid in ("a", "b"):
        face.write_clip(cid, {"m": np.zeros((50, 3), np.float32)})
        mel.write_clip(cid, {"mel": np.zeros((48, 16, 80), np.float32)})
    with pytest.warns(UserWarning, match="differ") as rec:
        ds = WindowDataset({"m": (face, "m"), "mel": (mel, "mel")}, ["a", "b"], window=48, hop=1)
    assert len(rec) == 1
    assert ds.clip_lengths == {"a": 48, "b": 48} and len(ds) == 2
    assert ds[1]["mel"].shape == (48, 16, 80)


def test_missing_or_partial_clip_raises(stores) -> None:
    face, _ = stores
    with pytest.raises(KeyError, match="ghost"):
        WindowDataset({"motion": (face, "motion")}, ["clipA", "ghost"], window=8)
    with pytest.raises(ValueError, match="reserved"):
        WindowDataset({"label": (face, "motion")}, ["clipA"], window=8)
    with pytest.raises(ValueError, match="window"):
        WindowDataset({"motion": (face, "motion")}, ["clipA"], window=0)


def test_decoded_clip_cache_gives_the_same_items_stays_in_budget_and_is_not_aliased(tmp_path):
    rng = np.random.default_rng(3)
    store = FeatureStore(tmp_path, "face")
    clips = {f"c{i}": rng.standard_normal((40, 6)).astype(np.float32) for i in range(5)}
    for cid, arr in clips.items():
        store.write_clip(cid, {"motion": arr})
    ids = sorted(clips)
    uncached = WindowDataset({"m": (store, "motion")}, ids, window=8, hop=3, cache_bytes=0)
    budget = 5 * clips["c0"].nbytes // 2  # room for two decoded clips: the LRU must evict
    cached = WindowDataset({"m": (store, "motion")}, ids, window=8, hop=3, cache_bytes=budget)
    for i in list(range(len(cached))) * 2:
        a, b = cached[i]["m"], uncached[i]["m"]
        assert torch.equal(a, b)
        cid, start = cached.window_at(i)
        assert torch.equal(a, torch.from_numpy(clips[cid][start : start + 8]))
        assert cached._decoded_bytes <= cached.cache_bytes
    assert len(cached._decoded) == 2 and len(uncached._decoded) == 0
    item = cached[0]["m"]
    item += 100.0  # a training step modifying its batch in place must not corrupt later reads
    assert torch.equal(cached[0]["m"], torch.from_numpy(clips["c0"][:8]))


def test_native_rate_sources_read_rate_frames_per_video_frame(tmp_path) -> None:
    """HuBERT stores hold 2N - 1 frames for N video frames (50 Hz); windows read 2 per video frame."""
    face = FeatureStore(tmp_path, "face")
    audio = FeatureStore(tmp_path, "hubert_emotion")
    face.write_clip("c", {"motion": _face("c", 40)})
    feats = np.arange(79, dtype=np.float32)[:, None].repeat(3, axis=1)  # row value == HuBERT frame index
    audio.write_clip("c", {"feats": feats})
    ds = WindowDataset({"face": (face, "motion"), "audio": (audio, "feats", 2)}, ["c"], 8, hop=4)
    assert ds.clip_lengths["c"] == 40 and len(ds) == 9  # no frame lost to the odd HuBERT count
    for i in range(len(ds)):
        item = ds[i]
        s = item["start"]
        assert item["face"].shape == (8, 57) and item["audio"].shape == (16, 3)
        want = np.minimum(np.arange(2 * s, 2 * s + 16), 78)  # the last window holds the final frame
        np.testing.assert_array_equal(item["audio"][:, 0].numpy(), want)
    np.testing.assert_array_equal(ds.frame("audio", "c", 5), feats[5])
    with pytest.raises(ValueError, match="rate"):
        WindowDataset({"audio": (audio, "feats", 0)}, ["c"], 8)
