"""The manifest and split shared beside the feature stores: published by the flows that write them, read
by training/evaluation/generation on a machine whose ``paths.root`` lacks them."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pytest

from emotalker.configs.schema import load_config
from emotalker.storage.manifest import Manifest, clip_id_for
from emotalker.storage.shared import FETCHED_DIR, publish_shared, shared_file
from emotalker.storage.split import SplitError, load_split
from emotalker.storage.zarr_store import StoreRoot


def _cfg(root: Path, url: str | None):
    return load_config(
        "configs/demo.yaml", [f"paths.root={root}", *([f"paths.features_url={url}"] if url else [])]
    )


def _first_machine(root: Path) -> list[str]:
    """A prepared root: two clips in the manifest and a split."""
    ids = [clip_id_for(a, "front", e, 3, "001") for a, e in (("M003", "angry"), ("W009", "neutral"))]
    rows = [
        {
            "clip_id": c,
            "actor": c[:4],
            "view": "front",
            "emotion": c.split("_")[2],
            "level": 3,
            "sentence": "001",
        }
        for c in ids
    ]
    Manifest(root / "manifest.parquet").upsert(rows)
    (root / "split.json").write_text(json.dumps({"train": ids[:1], "val": [], "test": ids[1:]}))
    return ids


@pytest.mark.parametrize("scheme", ["dir", "memory"])
def test_a_root_without_manifest_and_split_reads_the_copies_beside_the_stores(
    tmp_path: Path, scheme: str
) -> None:
    url = str(tmp_path / "bucket") if scheme == "dir" else f"memory://{uuid.uuid4().hex}/features"
    first, second = tmp_path / "m1", tmp_path / "m2"
    ids = _first_machine(first)
    assert publish_shared(_cfg(first, url).paths) == ["manifest", "split"]
    root = StoreRoot(url)
    assert root.read_bytes("split.json") == (first / "split.json").read_bytes()

    paths2 = _cfg(second, url).paths  # an empty root: only the URL
    split_file = shared_file(paths2, "split")
    assert split_file != paths2.resolve("split") and not paths2.resolve("split").exists()
    assert load_split(split_file)["train"] == ids[:1]
    assert {r["clip_id"]: r["emotion"] for r in Manifest(shared_file(paths2, "manifest")).records()} == {
        ids[0]: "angry",
        ids[1]: "neutral",
    }
    if scheme == "memory":
        assert split_file.parent == second / FETCHED_DIR  # downloaded for readers that need a path

    # a later publish is seen (fetched on every call); a local file of the second root wins
    (first / "split.json").write_text(json.dumps({"train": ids, "val": [], "test": []}))
    publish_shared(_cfg(first, url).paths)
    assert load_split(shared_file(paths2, "split"))["train"] == ids
    second.mkdir(exist_ok=True)
    (second / "split.json").write_text(json.dumps({"train": [], "val": [], "test": ids}))
    assert shared_file(paths2, "split") == second / "split.json"


def test_without_features_url_nothing_is_published_and_the_local_files_are_read(tmp_path: Path) -> None:
    _first_machine(tmp_path / "m1")
    paths = _cfg(tmp_path / "m1", None).paths
    assert publish_shared(paths) == []
    assert not list((tmp_path / "m1" / "features").rglob("*.json"))
    assert shared_file(paths, "split") == tmp_path / "m1" / "split.json"


def test_missing_everywhere_names_the_local_file_and_unknown_names_are_refused(tmp_path: Path) -> None:
    paths = _cfg(tmp_path / "m2", str(tmp_path / "bucket")).paths
    with pytest.raises(SplitError, match=r"m2/split.json not found; run the prepare flow"):
        load_split(shared_file(paths, "split"))
    with pytest.raises(ValueError, match="unknown shared file 'checkpoints'"):
        shared_file(paths, "checkpoints")


def test_training_inputs_come_from_the_stores_root_on_a_fresh_machine(tmp_path: Path) -> None:
    from emotalker.storage.workspace import Workspace
    from emotalker.tasks.training.data import clip_labels, stage_clips
    from emotalker.tasks.training.registry import data_fingerprints

    url = str(tmp_path / "bucket")
    ids = _first_machine(tmp_path / "m1")
    cfg1, cfg2 = _cfg(tmp_path / "m1", url), _cfg(tmp_path / "m2", url)
    publish_shared(cfg1.paths)
    for cid in ids:
        StoreRoot(url).store("face").write_clip(
            cid, {"motion": np.zeros((4, 70), np.float32)}, fingerprint="f"
        )
    ws1, ws2 = Workspace.from_paths(cfg1.paths), Workspace.from_paths(cfg2.paths)
    assert stage_clips(ws2, ["face"], "train") == ids[:1]
    assert set(clip_labels(ws2)) == set(ids)
    # the same data on both machines: the registry matches models trained on either
    assert data_fingerprints(ws2, "vqvae") == data_fingerprints(ws1, "vqvae")
