"""Damaged clip arrays are detected on read, naming the clip and the array (issue 30, case 8)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from emotalker.storage.zarr_store import CorruptClipError, FeatureStore, array_checksum

CLIP = "M003_front_angry_level_1_001"


def _shard(root: Path, key: str) -> Path:
    (shard,) = [
        p
        for p in (root / "face.zarr" / "clips" / CLIP / key).rglob("*")
        if p.is_file() and p.name != "zarr.json"
    ]
    return shard


def _delete(p: Path) -> None:
    p.unlink()


def _flip(p: Path) -> None:
    raw = bytearray(p.read_bytes())
    for i in range(len(raw) // 3, len(raw) // 3 + 64):  # 64 bytes in the compressed payload
        raw[i] ^= 0xFF
    p.write_bytes(bytes(raw))


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


@pytest.fixture()
def written(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    arrays = {"coeffs": rng.standard_normal((300, 257)).astype(np.float32), "valid": rng.random(300) > 0.1}
    FeatureStore(tmp_path, "face").write_clip(CLIP, arrays, fingerprint="fp")
    return tmp_path, arrays


def test_intact_clip_reads_back_and_verifies(written) -> None:
    root, arrays = written
    store = FeatureStore(root, "face")
    assert store.verify_clip(CLIP) == []
    back = store.read_clip(CLIP)
    assert all(np.array_equal(back[k], arrays[k]) for k in arrays)
    assert "checksums" not in store.read_attrs(CLIP)  # the attrs callers see are unchanged
    np.testing.assert_array_equal(store.read_slice(CLIP, "coeffs", 5, 9), arrays["coeffs"][5:9])


@pytest.mark.parametrize("damage", [_delete, _flip, _truncate], ids=["deleted", "flipped", "truncated"])
def test_damaged_shard_is_reported_naming_clip_and_array(written, damage: Callable[[Path], None]) -> None:
    root, _ = written
    damage(_shard(root, "coeffs"))
    store = FeatureStore(root, "face")
    assert store.has_clip(CLIP, "fp")  # still looks complete: only reading tells
    assert store.verify_clip(CLIP) == ["coeffs"]
    for read in (
        lambda s: s.read_clip(CLIP),
        lambda s: s.array(CLIP, "coeffs"),
        lambda s: s.read_slice(CLIP, "coeffs", 0, 4),
    ):
        with pytest.raises(CorruptClipError, match=rf"face store: clip '{CLIP}' array 'coeffs' is corrupt"):
            read(FeatureStore(root, "face"))
    assert FeatureStore(root, "face").read_clip(CLIP, ["valid"])["valid"].shape == (300,)  # the rest reads


def test_checksum_covers_dtype_shape_and_values() -> None:
    a = np.arange(12, dtype=np.float32)
    assert array_checksum(a) == array_checksum(a.copy())
    assert array_checksum(a) != array_checksum(a.reshape(3, 4))
    assert array_checksum(a) != array_checksum(a.astype(np.float64))
    b = a.copy()
    b[7] += 1
    assert array_checksum(a) != array_checksum(b)
    assert array_checksum(np.float32(3.0)) == array_checksum(np.asarray(np.float32(3.0)))


def test_rewrite_refreshes_the_checksum(written) -> None:
    root, arrays = written
    store = FeatureStore(root, "face")
    store.read_clip(CLIP)
    store.write_clip(CLIP, {k: v[:100] for k, v in arrays.items()}, fingerprint="fp2")
    assert store.read_clip(CLIP)["coeffs"].shape == (100, 257)
