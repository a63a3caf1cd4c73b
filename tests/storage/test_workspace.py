"""Workspace: the store root and shared files of a config, resolved in one place."""

from __future__ import annotations

from pathlib import Path

from emotalker.configs.schema import PathsConfig
from emotalker.storage.manifest import Manifest, clip_id_for
from emotalker.storage.workspace import Workspace
from emotalker.storage.zarr_store import StoreRoot


def test_workspace_reads_the_local_manifest_as_records(tmp_path: Path) -> None:
    paths = PathsConfig(root=tmp_path)
    ws = Workspace.from_paths(paths)
    assert ws.stores.root == StoreRoot.from_paths(paths).root
    assert ws.manifest_path == paths.resolve("manifest")
    assert ws.clips() == []  # no manifest yet: no clips
    cid = clip_id_for("M003", "front", "happy", 2, "004")
    row = {"clip_id": cid, "actor": "M003", "view": "front", "emotion": "happy", "level": 2}
    row["sentence"] = "004"
    Manifest(paths.resolve("manifest")).upsert([{**row, "status": "prepared"}])
    (rec,) = ws.clips(status="prepared")
    assert (rec.clip_id, rec.emotion, rec.level) == (cid, "happy", 2)
    assert ws.store("face").family == "face"
