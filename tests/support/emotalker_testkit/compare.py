"""Comparisons between a flow's outputs in two roots (reference vs killed-and-rerun)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emotalker.storage.manifest import Manifest
from emotalker.storage.zarr_store import FeatureStore

PATH_COLUMNS = ("video_path", "audio_path", "prepared_video", "prepared_audio")


def tree_digest(root: Path, skip_hidden: bool = True) -> dict[str, str]:
    """Relative path -> sha256 of every regular file under ``root``."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if p.is_file() and not (skip_hidden and any(part.startswith(".") for part in rel.parts)):
            out[rel.as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def manifest_rows(path: Path, root: Path) -> dict[str, dict[str, Any]]:
    """Manifest rows keyed by clip id, paths made root-relative, timestamps and fingerprints dropped."""
    rows = Manifest(path).records()
    ids = [r["clip_id"] for r in rows]
    assert len(ids) == len(set(ids)), f"duplicated clip ids in {path}"
    out = {}
    for r in rows:
        r = dict(r)
        r.pop("updated_at")
        r.pop("fingerprint")
        for k in PATH_COLUMNS:
            if r[k] is not None:
                r[k] = str(Path(r[k]).relative_to(root))
        out[r["clip_id"]] = r
    return out


def assert_store_equal(ref_root: Path, root: Path, family: str, expected_ids: list[str]) -> None:
    """Same complete clips (no partial leftovers), same arrays and attrs, every array fully readable."""
    ref, got = FeatureStore(ref_root, family), FeatureStore(root, family)
    assert ref.clip_ids() == sorted(expected_ids), family
    assert got.clip_ids() == ref.clip_ids(), f"{family}: complete clips differ"
    assert got.clip_ids(complete_only=False) == got.clip_ids(), f"{family}: a partial clip group is left"
    for cid in ref.clip_ids():
        a, b = ref.read_clip(cid), got.read_clip(cid)
        assert sorted(a) == sorted(b), (family, cid)
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=f"{family}/{cid}/{k}")
        ra, rb = ref.read_attrs(cid), got.read_attrs(cid)
        assert ra["n_frames"] == rb["n_frames"] and rb["complete"] is True


def failures(root: Path, family: str) -> dict[str, Any]:
    p = root / "features" / f"{family}.failures.json"
    return json.loads(p.read_text()) if p.exists() else {}


def assert_state_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], what: str) -> None:
    assert sorted(a) == sorted(b), what
    for k in a:
        assert torch.equal(a[k], b[k]), f"{what}: tensor {k} differs"
