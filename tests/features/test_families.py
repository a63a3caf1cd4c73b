"""A feature family is one module plus one registry line: planning, the chunk worker and the read-back
all follow it. This file is such a module (``TOY``); its fixture is the registration line."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from emotalker.configs.fingerprint import fingerprint
from emotalker.configs.schema import PipelineConfig, load_config
from emotalker.storage.windows import WindowDataset
from emotalker.storage.workspace import Workspace
from emotalker.storage.zarr_store import StoreRoot
from emotalker.tasks.features import families as reg
from emotalker.tasks.features.plan import todo, up_to_date
from emotalker.tasks.features.spec import ArraySpec, ClipOutputs, FeatureFamily, StoreSpec
from emotalker.tasks.features.workers import compute_chunk, each_clip

CONFIG = str(Path(__file__).resolve().parents[2] / "configs" / "demo.yaml")


def _toy_settings(cfg: PipelineConfig) -> dict[str, Any]:
    return {"scale": cfg.audio.seed + 1}


def _toy_outputs(
    clips: list[dict[str, Any]], settings: dict[str, Any], device: str, root: StoreRoot
) -> Iterator[tuple[str, ClipOutputs | Exception]]:
    def outputs(clip: dict[str, Any]) -> ClipOutputs:
        n = 2 * int(clip["n_frames"])  # 50 Hz: two rows per video frame
        rows = np.arange(2 * n, dtype=np.float32).reshape(n, 2) * settings["scale"]
        if clip["clip_id"] == "bad":
            rows = rows[:, :1]  # not what the entry declares
        return {"toy_energy": ({"energy": rows}, {"n_frames": n, "frame_rate": 50})}

    return each_clip(clips, outputs)


def _toy_fingerprint(cfg: PipelineConfig) -> str:
    return fingerprint("toy-v1", _toy_settings(cfg))


TOY = FeatureFamily(
    name="toy",
    flow="audio",
    stores=(StoreSpec("toy_energy", {"energy": ArraySpec((2,), "float32")}, frame_rate=50),),
    fingerprint=_toy_fingerprint,
    compute=_toy_outputs,
    settings=_toy_settings,
)


@pytest.fixture
def toy_family() -> Iterator[FeatureFamily]:
    """The toy family registered for one test: one line, as each built-in family's in ``families/``."""
    yield reg.register(TOY)
    reg.unregister("toy")


def test_builtin_families_declare_every_store_once() -> None:
    assert [f.name for f in reg.families()] == ["face", "hubert", "mel", "tokens"]
    stores = [s for f in reg.families() for s in f.store_names]
    assert sorted(stores) == ["face", "hubert_content", "hubert_emotion", "mel", "tokens"]
    assert [reg.store_spec(s).rate for s in ("face", "hubert_emotion", "tokens", "mel")] == [1, 2, 2, 1]
    with pytest.raises(ValueError, match="already registered"):
        reg.register(reg.REGISTRY["mel"])
    with pytest.raises(KeyError, match="unknown feature store 'melody'"):
        reg.store_spec("melody")


def test_each_builtin_family_is_one_module_registered_by_one_line() -> None:
    import importlib
    import inspect

    source = inspect.getsource(reg)
    for name in ("face", "hubert", "mel", "tokens"):
        module = importlib.import_module(f"emotalker.tasks.features.families.{name}")
        assert reg.REGISTRY[name] is module.FAMILY
        assert source.count(f"register({name}.FAMILY)") == 1
    assert reg.REGISTRY["tokens"].needs == (reg.REGISTRY["hubert"],)


@pytest.mark.parametrize("first", ["spec", "workers", "plan", "families.tokens"])
def test_the_feature_modules_import_in_any_order(first: str) -> None:
    """No import cycle between the declarations, the chunk workers, planning and the families."""
    import subprocess
    import sys

    code = f"import emotalker.tasks.features.{first}; import emotalker.flows.featurize"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_registered_family_is_planned_computed_and_read_back(tmp_path: Path, toy_family) -> None:
    cfg = load_config(CONFIG, [f"paths.root={tmp_path}"])
    ws = Workspace.from_paths(cfg.paths)
    clips = [{"clip_id": f"c{i}", "n_frames": 6 + i} for i in range(3)]
    assert toy_family in reg.families("audio")  # the audio-features subflow runs it after the others

    fp, stale = todo(cfg, toy_family, clips, ws=ws)
    assert stale == [dict(c, in_store=False) for c in clips] and not up_to_date(cfg, toy_family, clips, ws=ws)
    root = ws.stores
    statuses = compute_chunk(stale, toy_family, root, toy_family.settings(cfg), "cpu", fp)
    assert [s["ok"] for s in statuses] == [True, True, True]
    assert up_to_date(cfg, toy_family, clips, ws=ws) and todo(cfg, toy_family, clips, ws=ws)[1] == []
    other = load_config(CONFIG, [f"paths.root={tmp_path}", "audio.seed=7"])
    # a fingerprint input changed: all stale, and their old versions are replaced
    assert todo(other, toy_family, clips, ws=Workspace.from_paths(other.paths))[1] == [
        dict(c, in_store=True) for c in clips
    ]

    store, key, rate = reg.window_source(root, "toy_energy", "energy")
    assert rate == 2 and reg.stored_rate_error(store, "c2") is None
    ds = WindowDataset({"energy": (store, key, rate)}, ["c2"], window=4, hop=4)  # 8 video frames
    item = ds[1]  # video frames [4, 8): stored rows [8, 16)
    expected = np.arange(32, dtype=np.float32).reshape(16, 2) * _toy_settings(cfg)["scale"]
    np.testing.assert_array_equal(item["energy"].numpy(), expected[8:16])


def test_arrays_that_break_the_declaration_are_refused_before_writing(tmp_path: Path, toy_family) -> None:
    cfg = load_config(CONFIG, [f"paths.root={tmp_path}"])
    ws = Workspace.from_paths(cfg.paths)
    root = ws.stores
    clips = [{"clip_id": "bad", "n_frames": 4}, {"clip_id": "good", "n_frames": 4}]
    bad, good = compute_chunk(clips, toy_family, root, toy_family.settings(cfg), "cpu", "fp")
    assert not bad["ok"] and "toy_energy/bad/energy has shape (8, 1), expected (T, 2)" in bad["error"]
    assert good["ok"]
    assert root.store("toy_energy").clip_ids(complete_only=False) == ["good"]


def test_a_corrupt_clip_is_found_by_verify_and_recomputed(tmp_path: Path, toy_family) -> None:
    """Issue 30 case 8: a lost chunk of one clip is not seen by a plain rerun (which reads no array), is
    found by ``verify`` and recomputed; reading it before fails in one line naming the clip and array."""
    from emotalker.flows.cli import _one_line
    from emotalker.storage.zarr_store import CorruptClipError

    cfg = load_config(CONFIG, [f"paths.root={tmp_path}"])
    ws = Workspace.from_paths(cfg.paths)
    clips = [{"clip_id": f"c{i}", "n_frames": 6 + i} for i in range(3)]
    fp, stale = todo(cfg, toy_family, clips, ws=ws)
    root = ws.stores
    compute_chunk(stale, toy_family, root, toy_family.settings(cfg), "cpu", fp)
    store = root.store("toy_energy")
    chunks = [p for p in Path(tmp_path).rglob("*") if p.is_file() and "c1" in p.parts and "energy" in p.parts]
    chunks = [p for p in chunks if not p.name.endswith(".json")]
    assert chunks, "the toy store wrote no chunk file for c1"
    for p in chunks:
        p.write_bytes(b"\0" * p.stat().st_size)  # damaged on disk, same size

    with pytest.raises(CorruptClipError) as err:
        WindowDataset({"energy": (store, "energy", 2)}, ["c1"], window=4, hop=4)[0]
    line = _one_line(err.value)
    assert "'c1'" in line and "'energy'" in line and "--verify" in line and "\n" not in str(err.value)

    assert todo(cfg, toy_family, clips, ws=ws)[1] == []  # a plain rerun reads no array: no-op
    fp, stale = todo(cfg, toy_family, clips, verify=True, ws=ws)
    assert stale == [dict(clips[1], in_store=True)]
    assert [s["ok"] for s in compute_chunk(stale, toy_family, root, toy_family.settings(cfg), "cpu", fp)] == [
        True
    ]
    assert root.store("toy_energy").verify_clip("c1") == []
    assert todo(cfg, toy_family, clips, verify=True, ws=ws)[1] == []
