"""Batch generation end to end with the trained tiny models (slow): a good row, a face-less image and a
missing audio file in one job file; one model load, each image prepared once; a rerun redoes only the
failed rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import soundfile as sf

from emotalker_testkit.pipeline import CONFIG

pytestmark = pytest.mark.slow


def _speech(path: Path, frames: int) -> Path:
    from emotalker.tasks.demo.synthetic.speech import prosody_for, synthesize, voice_for_actor

    mono = synthesize(
        "Bring the papers.", voice_for_actor("W009", 0), prosody_for("happy", 3), sample_rate=16_000
    )
    n = frames * 640 + 320
    sf.write(path, np.tile(mono, -(-n // len(mono)))[:n], 16_000)
    return path


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    """Counts EmoTalker loads, image preparations and rows written; a blank image has no face.

    The demo's stand-in S3FD fires on any image (its class head is constant), so the detector is told
    what a real one would say about a uniform grey picture: no face.
    """
    from emotalker.tasks.features.face_coeffs import LandmarkDetector
    from emotalker.tasks.generation import batch, run

    calls: dict[str, list[Any]] = {"loads": [], "prepared": [], "written": []}
    load, prepare, write = run.load_emotalker, batch.prepare_image, batch.write_generation
    detect = LandmarkDetector.detect_boxes

    def counting_load(*a: Any, **k: Any) -> Any:
        calls["loads"].append(1)
        return load(*a, **k)

    def counting_prepare(path: Path, models: Any) -> Any:
        calls["prepared"].append(path.name)
        return prepare(path, models)

    def counting_write(models: Any, out_dir: Path, *a: Any) -> Any:
        calls["written"].append(out_dir.name)
        return write(models, out_dir, *a)

    def no_face_in_blank(self: Any, frames: np.ndarray) -> np.ndarray:
        boxes = detect(self, frames)
        blank = np.asarray(frames).reshape(len(frames), -1).std(axis=1) == 0
        boxes[blank] = np.nan
        return boxes

    monkeypatch.setattr(run, "load_emotalker", counting_load)
    monkeypatch.setattr(batch, "prepare_image", counting_prepare)
    monkeypatch.setattr(batch, "write_generation", counting_write)
    monkeypatch.setattr(LandmarkDetector, "detect_boxes", no_face_in_blank)
    return calls


def test_batch_good_row_no_face_and_missing_audio_then_rerun(trained, counted, tmp_path, capsys) -> None:
    import cv2
    from skimage import data

    from emotalker.flows.cli import main

    torch_threads()
    cv2.imwrite(str(tmp_path / "face.jpg"), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(tmp_path / "blank.png"), np.full((256, 256, 3), 128, np.uint8))
    _speech(tmp_path / "speech.wav", 12)
    jobs = tmp_path / "jobs.csv"
    jobs.write_text(
        "image,audio,emotion_reference,output\n"
        "face.jpg,speech.wav,,good\n"
        "blank.png,speech.wav,,noface\n"
        "face.jpg,later.wav,,noaudio\n"
    )
    argv = ["generate", "--batch", str(jobs), "--out", str(tmp_path / "out"), "--config", CONFIG]
    for item in trained["overrides"]:
        argv += ["--set", item]

    assert main(argv) == 2  # a row failed
    printed = capsys.readouterr().out.strip().splitlines()
    rows = {line.split()[1].rstrip(":"): line for line in printed[:3]}
    assert rows["good"].startswith("done")
    assert (
        rows["noface"].startswith("failed") and "blank.png" in rows["noface"] and "no face" in rows["noface"]
    )
    assert rows["noaudio"].startswith("failed") and "audio file not found" in rows["noaudio"]
    assert "1 done, 0 skipped (done before), 2 failed" in printed[3]
    assert len(counted["loads"]) == 1 and sorted(counted["prepared"]) == ["blank.png", "face.jpg"]
    assert counted["written"] == ["good"]
    video = tmp_path / "out" / "good" / "video.mp4"
    with av.open(str(video)) as c:
        assert sum(1 for _ in c.decode(c.streams.video[0])) == 12
    assert (tmp_path / "out" / "jobs.csv.status.csv").is_file()
    first_mtime = video.stat().st_mtime_ns

    _speech(tmp_path / "later.wav", 8)  # the missing audio arrives; the blank image still has no face
    counted["written"].clear()
    assert main(argv) == 2
    printed = capsys.readouterr().out.strip().splitlines()
    assert counted["written"] == ["noaudio"]  # only the failed rows were tried
    assert printed[0].startswith("skipped  good") and printed[2].startswith("done     noaudio")
    assert "1 done, 1 skipped (done before), 1 failed" in printed[3]
    assert video.stat().st_mtime_ns == first_mtime
    assert len(counted["loads"]) == 2  # one per run


def torch_threads() -> None:
    import torch

    torch.set_num_threads(1)
