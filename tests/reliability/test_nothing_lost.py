"""Issue 30, "nothing lost, nothing hidden": one failure is reported once, where it is, with its cause, and
costs neither the other clips nor a rerun's chance to repair it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

CONFIG = "configs/demo.yaml"


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *args], check=True)


def _clip(raw: Path, sentence: str | bytes, actor: str = "M003", emotion: str = "angry") -> None:
    """A MEAD-layout clip (0.4 s of 30 fps video, 48 kHz sine audio); ``sentence`` may be raw bytes."""
    vdir, adir = (raw / actor / "video" / "front" / emotion / "level_1", raw / actor / "audio" / emotion / "level_1")
    vdir.mkdir(parents=True, exist_ok=True)
    adir.mkdir(parents=True, exist_ok=True)
    tmp_v, tmp_a = raw / "v.mp4", raw / "a.m4a"
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x64:rate=30:duration=0.4", "-pix_fmt", "yuv420p", str(tmp_v))
    _ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=0.4", str(tmp_a))
    stem = sentence if isinstance(sentence, bytes) else sentence.encode()
    os.rename(tmp_v, os.path.join(os.fsencode(vdir), stem + b".mp4"))
    os.rename(tmp_a, os.path.join(os.fsencode(adir), stem + b".m4a"))


def test_non_utf8_file_name_fails_that_clip_only(tmp_path):
    """Case 3: ``016\\xff.mp4`` is recorded failed under its escaped name; the other clip is prepared and
    the manifest is written."""
    from emotalker.storage.manifest import Manifest
    from emotalker.tasks.data.prepare import mead_clips, prepare_chunk, register_clips

    raw, prepared = tmp_path / "raw", tmp_path / "prepared"
    _clip(raw, "015")
    _clip(raw, b"016\xff")
    manifest = Manifest(tmp_path / "manifest.parquet")
    clips = mead_clips(raw, ["front"])
    new, todo = register_clips(manifest, clips, 25, 16_000, 1)
    assert [c["clip_id"] for c in todo] == ["M003_front_angry_level_1_015"]
    manifest.upsert(prepare_chunk.fn(todo, prepared, fps=25, sample_rate=16_000, tolerance=1, workers=1))
    rows = {r["clip_id"]: r for r in Manifest(manifest.path).records()}
    bad = rows["M003_front_angry_level_1_016\\xff"]
    assert bad["status"] == "failed"
    assert "016\\xff.mp4: file name is not valid UTF-8" in bad["error"]
    assert rows["M003_front_angry_level_1_015"]["status"] == "prepared"
    # a rerun does not try the bad clip again and keeps its reason
    _, todo2 = register_clips(manifest, mead_clips(raw, ["front"]), 25, 16_000, 1)
    assert todo2 == []
    assert Manifest(manifest.path).get("M003_front_angry_level_1_016\\xff")["status"] == "failed"
