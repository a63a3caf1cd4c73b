"""The training window reader works on stores behind fsspec URLs (object-storage style), not only paths.

FeatureStore round trips through ``memory://`` and ``file://`` are covered in test_zarr_store.py; this
checks ``WindowDataset`` (and a DataLoader over it) on such stores, including a pickled copy.
"""

from __future__ import annotations

import pickle
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch

from emotalker.storage.windows import WindowDataset
from emotalker.storage.zarr_store import FeatureStore


def _url(kind: str, tmp_path: Path) -> str:
    return f"memory://emotalker-{uuid.uuid4().hex}" if kind == "memory" else f"file://{tmp_path}/features"


@pytest.mark.parametrize("kind", ["memory", "file"])
def test_window_dataset_through_fsspec_url(kind: str, tmp_path: Path) -> None:
    root = _url(kind, tmp_path)
    rng = np.random.default_rng(0)
    face, audio = FeatureStore(root, "face"), FeatureStore(root, "hubert_emotion")
    data = {}
    for cid, n in (("a", 40), ("b", 25), ("short", 5)):
        m = rng.standard_normal((n, 70)).astype(np.float32)
        f = rng.standard_normal((n, 12)).astype(np.float32)
        face.write_clip(cid, {"motion": m})
        audio.write_clip(cid, {"feats": f})
        data[cid] = (m, f)
    # reopen from the URL alone, as a training process on another machine would
    src = {
        "face": (FeatureStore(root, "face"), "motion"),
        "audio": (FeatureStore(root, "hubert_emotion"), "feats"),
    }
    ds = WindowDataset(src, ["a", "b", "short"], window=16, hop=8, labels={"a": 1, "b": 2, "short": 0})
    assert ds.skipped_ids == ["short"]
    assert len(ds) == 4 + 2  # a: starts 0, 8, 16, 24; b: 0, 8
    for i in range(len(ds)):
        cid, start = ds.window_at(i)
        item = ds[i]
        np.testing.assert_array_equal(item["face"].numpy(), data[cid][0][start : start + 16])
        np.testing.assert_array_equal(item["audio"].numpy(), data[cid][1][start : start + 16])
    clone = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(clone[5]["audio"].numpy(), ds[5]["audio"].numpy())
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=3, shuffle=False)))
    assert batch["face"].shape == (3, 16, 70) and batch["label"].tolist() == [1, 1, 1]
    if kind == "file":
        assert (tmp_path / "features" / "face.zarr").is_dir()
