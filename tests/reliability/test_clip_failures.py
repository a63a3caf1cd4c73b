"""Clips that cannot be prepared (issue 18, cases 3 and 7): a failed clip leaves no outputs behind and
keeps its reason in the manifest; a prepare run with nothing preparable ends with a summary by reason
and a non-zero CLI exit, not with the split's advice."""

from __future__ import annotations

import subprocess
from pathlib import Path

from emotalker.storage.manifest import Manifest

CONFIG = "configs/demo.yaml"


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *args], check=True)


def _clip(raw: Path, actor: str, emotion: str, sentence: str, audio: str | None) -> None:
    """A MEAD-layout clip: 0.4 s of 30 fps video and 48 kHz audio (``sine``, ``silent``) or none."""
    video = raw / actor / "video" / "front" / emotion / "level_1" / f"{sentence}.mp4"
    video.parent.mkdir(parents=True, exist_ok=True)
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x64:rate=30:duration=0.4", "-pix_fmt", "yuv420p", str(video))
    if audio is None:
        return
    wav = raw / actor / "audio" / emotion / "level_1" / f"{sentence}.m4a"
    wav.parent.mkdir(parents=True, exist_ok=True)
    src = "sine=frequency=440:sample_rate=48000:duration=0.4" if audio == "sine" else "anullsrc=r=48000"
    _ffmpeg("-f", "lavfi", "-i", src, "-t", "0.4", str(wav))


def _silence(raw: Path, actor: str, emotion: str, sentence: str) -> None:
    wav = raw / actor / "audio" / emotion / "level_1" / f"{sentence}.m4a"
    _ffmpeg("-f", "lavfi", "-i", "anullsrc=r=48000", "-t", "0.4", str(wav))


def test_failed_clip_leaves_no_outputs_and_keeps_its_reason(tmp_path):
    """Case 7: the audio step fails after the video was written: the video goes, the reason stays;
    the same after a rerun where a formerly good clip's audio went bad."""
    from emotalker.tasks.data.extract import scan_mead_tree
    from emotalker.tasks.data.prepare import prepare_chunk

    raw, prepared = tmp_path / "raw", tmp_path / "prepared"
    _clip(raw, "M003", "angry", "001", "sine")
    _clip(raw, "M003", "angry", "002", "silent")
    clips = [
        dict(c, clip_id=f"M003_front_angry_level_1_{c['sentence']}", video_path=str(c["video_path"]))
        | {"audio_path": str(c["audio_path"])}
        for c in scan_mead_tree(raw)
    ]
    out = {
        u["clip_id"]: u
        for u in prepare_chunk.fn(clips, prepared, fps=25, sample_rate=16_000, tolerance=1, workers=1)
    }
    good, bad = out["M003_front_angry_level_1_001"], out["M003_front_angry_level_1_002"]
    assert good["status"] == "prepared" and Path(good["prepared_video"]).is_file()
    assert bad["status"] == "failed" and "002.m4a: audio is silent" in bad["error"]
    assert bad["prepared_video"] is None and bad["prepared_audio"] is None
    assert sorted(p.name for p in prepared.rglob("*") if p.is_file()) == [
        "M003_front_angry_level_1_001.mp4",
        "M003_front_angry_level_1_001.wav",
    ]
    manifest = Manifest(tmp_path / "manifest.parquet")
    manifest.upsert([dict(c, status="raw") for c in clips])
    manifest.upsert(list(out.values()))
    assert "audio is silent" in manifest.get("M003_front_angry_level_1_002")["error"]

    _silence(raw, "M003", "angry", "001")  # the good clip's audio is replaced by silence: rerun
    clips[0]["audio_path"] = str(raw / "M003/audio/angry/level_1/001.m4a")
    [again] = prepare_chunk.fn(clips[:1], prepared, fps=25, sample_rate=16_000, tolerance=1, workers=1)
    assert again["status"] == "failed" and "audio is silent" in again["error"]
    assert not list(prepared.rglob("*.mp4")) and not list(prepared.rglob("*.wav"))


def test_prepare_with_nothing_preparable_summarises_failures_by_reason(prefect_server, tmp_path, capsys):
    """Case 3: every clip fails: one line grouped by reason, CLI exit 2, no split advice, no split file."""
    from emotalker.flows.cli import main

    root = tmp_path / "root"
    raw = root / "raw"
    _clip(raw, "M003", "angry", "001", "silent")
    _clip(raw, "M003", "happy", "001", "silent")
    _clip(raw, "W009", "angry", "001", None)
    rc = main(["run", "prepare", "--config", CONFIG, "--set", f"paths.root={root}"])
    err = capsys.readouterr().err
    assert rc == 2, err
    [line] = [x for x in err.splitlines() if x.startswith("emotalker:")]
    assert line == (
        "emotalker: prepare: none of the 3 clips could be prepared; "
        "audio is silent (peak < 1e-4): 2 clips "
        "(M003_front_angry_level_1_001, M003_front_happy_level_1_001); "
        "no matching audio file: 1 clip (W009_front_angry_level_1_001); "
        f"the reasons are in {root / 'manifest.parquet'} (column error)"
    )
    assert "SplitError" not in err and "run the prepare flow first" not in err and "Traceback" not in err
    assert not (root / "split.json").exists() and not list((root / "prepared").rglob("*.*"))
    rows = {r["clip_id"]: r for r in Manifest(root / "manifest.parquet").records()}
    assert {r["status"] for r in rows.values()} == {"failed"}
    assert "no matching audio file" in rows["W009_front_angry_level_1_001"]["error"]


def test_prepare_with_some_good_clips_still_succeeds(prefect_server, tmp_path):
    """The good clip next to a bad one is prepared and split; the bad one is a failed manifest row."""
    from emotalker.flows.ingest import prepare_flow

    root = tmp_path / "root"
    _clip(root / "raw", "M003", "angry", "001", "sine")
    _clip(root / "raw", "W009", "angry", "001", "silent")
    _clip(root / "raw", "W009", "happy", "001", "sine")
    res = prepare_flow(CONFIG, [f"paths.root={root}", "data.test_actors=[M003]", "data.val_actors=[]"])
    assert res["status"] == {"prepared": 2, "failed": 1}
    assert (root / "split.json").is_file()
    assert not list((root / "prepared").rglob("W009_front_angry*"))
