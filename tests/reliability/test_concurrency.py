"""Concurrency (issue 9): two feature flows started at once on the same stores corrupt nothing.

Both run as CLI subprocesses on one root and write the same clips at about the same time; afterwards
every clip is complete, readable and equal to the single uninterrupted reference run, the failures
files are valid and empty, and the manifest is untouched.
"""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from emotalker.storage.zarr_store import FeatureStore
from emotalker_testkit.compare import assert_store_equal, failures, manifest_rows
from emotalker_testkit.reliability import CONFIG, shared_inputs, tiny_overrides

FAMILIES = {
    "face-features": ["face"],
    "audio-features": ["hubert_emotion", "hubert_content", "mel", "tokens"],
}


@pytest.mark.slow
@pytest.mark.parametrize("flow", ["audio-features", "face-features"])
def test_two_feature_flows_at_once_leave_whole_equal_stores(reference, cli, tmp_path, flow):
    a, b = reference["root"], tmp_path / "root"
    b.mkdir()
    for name in ("manifest.parquet", "split.json"):
        shutil.copy2(a / name, b / name)
    ov = tiny_overrides(b, *shared_inputs(reference))
    manifest_before = (b / "manifest.parquet").read_bytes()
    runs = [cli("run", flow, "--config", CONFIG, *[f"--set={o}" for o in ov]) for _ in range(2)]
    codes = [r.wait(timeout=400) for r in runs]
    assert codes == [0, 0], "\n\n".join(r.output() for r in runs)
    ids = sorted(manifest_rows(a / "manifest.parquet", a))
    for family in FAMILIES[flow]:
        assert_store_equal(a / "features", b / "features", family, ids)
        p = b / "features" / f"{family}.failures.json"
        assert p.exists() and json.loads(p.read_text()) == {} == failures(a, family)
    assert (b / "manifest.parquet").read_bytes() == manifest_before


def test_concurrent_writers_of_one_clip_never_expose_a_mixed_or_partial_clip(tmp_path):
    """Threads stand in for processes here (the lock is an fcntl lock, per open file description)."""
    store_root = tmp_path / "features"
    errors: list[BaseException] = []
    shapes = {w: np.full((300, 257), float(w + 1), np.float32) for w in range(4)}  # never the fill value

    def writer(w: int) -> None:
        store = FeatureStore(store_root, "face")
        try:
            for _ in range(5):
                store.write_clip(
                    "clip", {"coeffs": shapes[w], "valid": np.full(300, w % 2 == 0)}, fingerprint=str(w)
                )
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    seen = 0
    reader = FeatureStore(store_root, "face")
    while any(t.is_alive() for t in threads):
        try:
            got = reader.read_clip("clip")
            fp = reader.read_attrs("clip")["fingerprint"]  # a separate read: may already be the next version
        except (KeyError, FileNotFoundError):
            continue  # absent while being replaced: fine, never half-written
        w = int(got["coeffs"][0, 0]) - 1  # the version this read saw: whole, and every array of it
        assert 0 <= w < 4 and fp in {"0", "1", "2", "3"}
        np.testing.assert_array_equal(got["coeffs"], shapes[w])
        np.testing.assert_array_equal(got["valid"], np.full(300, w % 2 == 0))
        seen += 1
    for t in threads:
        t.join()
    assert not errors, errors
    final = FeatureStore(store_root, "face")
    w = int(final.read_attrs("clip")["fingerprint"])
    np.testing.assert_array_equal(final.read_clip("clip")["coeffs"], shapes[w])
    assert final.clip_ids(complete_only=False) == ["clip"]


def test_failure_records_of_concurrent_runs_are_merged(tmp_path):
    """Each run merges its own outcomes into the failures file; another run's records survive."""
    from emotalker.storage.failures import load_failures, record_failures
    from emotalker.storage.zarr_store import StoreRoot

    root = StoreRoot(tmp_path / "features")
    first = {"a": {"error": "no face", "fingerprint": "f"}, "b": {"error": "x", "fingerprint": "f"}}
    record_failures(root, "face", first)
    # two runs that each read the file before the other wrote: one fixed "b", the other failed "c"
    record_failures(root, "face", {"b": None})
    record_failures(root, "face", {"c": {"error": "bad audio", "fingerprint": "f"}})
    assert sorted(load_failures(root, "face")) == ["a", "c"]
    assert not [p for p in Path(tmp_path, "features").iterdir() if p.suffix == ".tmp"]
