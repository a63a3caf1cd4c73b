"""Batch generation jobs without models: job-file parsing and its one-line errors, and the batch's
bookkeeping (status file, reruns, never overwriting another job's output) with the generation faked."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from emotalker.tasks.generation import batch
from emotalker.tasks.generation.animate import InputError
from emotalker.tasks.generation.batch import JobFileError, read_jobs, run_batch, status_path


def _csv(path: Path, rows: list[dict[str, str]], header: list[str] | None = None) -> Path:
    header = header or list(rows[0])
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=header)
        w.writeheader()
        w.writerows(rows)
    return path


def test_csv_and_jsonl_rows_resolve_paths_against_the_job_file(tmp_path: Path) -> None:
    jobs = _csv(
        tmp_path / "jobs.csv",
        [
            {"image": "a.jpg", "audio": "x.wav", "emotion_reference": "", "output": "one"},
            {"image": "/abs/b.png", "audio": "x.wav", "emotion_reference": "drive.mp4", "output": "two"},
        ],
    )
    rows = read_jobs(jobs)
    assert [r.output for r in rows] == ["one", "two"] and [r.line for r in rows] == [2, 3]
    assert rows[0].image == tmp_path / "a.jpg" and rows[0].emotion_reference is None
    assert rows[1].image == Path("/abs/b.png") and rows[1].emotion_reference == tmp_path / "drive.mp4"
    lines = [
        json.dumps({"image": "a.jpg", "audio": "x.wav", "output": "one"}),
        "",
        json.dumps({"image": "a.jpg", "audio": "y.wav", "output": "two", "emotion_reference": None}),
    ]
    (tmp_path / "jobs.jsonl").write_text("\n".join(lines) + "\n")
    rows = read_jobs(tmp_path / "jobs.jsonl")
    assert [(r.line, r.audio.name, r.emotion_reference) for r in rows] == [
        (1, "x.wav", None),
        (3, "y.wav", None),
    ]


@pytest.mark.parametrize(
    ("content", "suffix", "message"),
    [
        (None, ".csv", "job file not found"),
        ("", ".csv", "no job rows"),
        ("image,audio,output\n", ".csv", "no job rows"),
        ("image,output\nface.jpg,one\n", ".csv", ":2: missing audio"),
        ("image,audio,output\nface.jpg,,one\n", ".csv", ":2: missing audio"),
        ("image,audio,output,emotion\nf.jpg,a.wav,one,happy\n", ".csv", "unknown column(s) emotion"),
        ("image,audio,output\nf.jpg,a.wav,one\ng.jpg,b.wav,one\n", ".csv", ":3: duplicate output name 'one'"),
        ("image,audio,output\nf.jpg,a.wav,../up\n", ".csv", "must be a plain folder name"),
        ("image,audio,output\nf.jpg,a.wav,one,extra\n", ".csv", "more values than the header"),
        ('{"image": "f.jpg", "audio": "a.wav", "output": "one"}\n{oops\n', ".jsonl", ":2: not a JSON object"),
        ('["f.jpg", "a.wav", "one"]\n', ".jsonl", "must be a JSON object"),
        ('{"image": "f.jpg", "output": "one"}\n', ".jsonl", ":1: missing audio"),
    ],
)
def test_bad_job_files_are_one_line_naming_the_file(
    tmp_path: Path, content: str | None, suffix: str, message: str
) -> None:
    path = tmp_path / f"jobs{suffix}"
    if content is not None:
        path.write_text(content)
    with pytest.raises(JobFileError) as err:
        read_jobs(path)
    text = str(err.value)
    assert message in text and str(path) in text and "\n" not in text


def test_cli_refuses_a_bad_job_file_in_one_line_before_any_server(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    from emotalker.flows import local_server
    from emotalker.flows.cli import main

    def no_server(*a: Any, **k: Any) -> None:
        raise AssertionError("a bad job file must fail before any Prefect server starts")

    monkeypatch.setattr(local_server, "api_for_cli", no_server)
    bad = tmp_path / "jobs.csv"
    bad.write_text("image,output\nface.jpg,one\n")
    for argv, message in [
        (["generate", "--batch", str(bad)], "missing audio"),
        (["generate", "--batch", str(tmp_path / "absent.csv")], "job file not found"),
        (["generate", "--batch", str(bad), "--image", "f.jpg"], "not --image"),
        (["generate", "--image", "f.jpg"], "generate needs --audio, --out (or --batch JOBS)"),
    ]:
        assert main([*argv, "--config", "demo"]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err, err


class _Fakes:
    """Stand-ins for the loading and generation steps, counting the calls a batch makes."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.loads = 0
        self.prepared: list[str] = []
        self.generated: list[str] = []
        monkeypatch.setattr(batch, "load_generation_models", self.load)
        monkeypatch.setattr(batch, "prepare_image", self.prepare)
        monkeypatch.setattr(batch, "generate_motion", self.motion)
        monkeypatch.setattr(batch, "write_generation", self.write)
        monkeypatch.setattr(batch, "load_speech", self.speech)

    def load(self, cfg: Any, **kw: Any) -> Any:
        self.loads += 1

        class Models:
            method, mode, cfg, device = kw["method"], "crop", None, "cpu"

            def emotalker(self) -> None:
                return None

        return Models()

    def prepare(self, path: Path, models: Any) -> Any:
        self.prepared.append(path.name)
        if "blank" in path.name:
            raise InputError(f"{path}: no face found in the identity image")  # as the real one names it
        return batch.PreparedImage(image=None, identity={"motion": path.name}, source=None)

    def speech(self, path: Path) -> tuple[Any, str]:
        if not path.is_file():
            raise InputError(f"audio file not found: {path}")
        return [0.1] * 16_000, ""

    def motion(self, models: Any, wave: Any, reference: Any) -> tuple[Any, dict[str, str]]:
        return [reference] * 25, {}

    def write(self, models: Any, out_dir: Path, motion: Any, *rest: Any) -> dict[str, str]:
        self.generated.append(out_dir.name)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "video.mp4").write_text(str(motion[0]))
        return {}


def test_batch_bookkeeping_status_reruns_and_no_silent_overwrite(tmp_path: Path, monkeypatch) -> None:
    fakes = _Fakes(monkeypatch)
    for name in ("face.jpg", "blank.png", "speech.wav"):
        (tmp_path / name).write_bytes(b"x")
    rows = [
        {"image": "face.jpg", "audio": "speech.wav", "output": "good"},
        {"image": "blank.png", "audio": "speech.wav", "output": "noface"},
        {"image": "face.jpg", "audio": "missing.wav", "output": "noaudio"},
        {"image": "face.jpg", "audio": "speech.wav", "output": "again"},
    ]
    jobs = _csv(tmp_path / "jobs.csv", rows)
    out = tmp_path / "out"
    (out / "taken").mkdir(parents=True)
    (out / "taken" / "video.mp4").write_text("someone else's")
    _csv(jobs, [*rows, {"image": "face.jpg", "audio": "speech.wav", "output": "taken"}])

    first = run_batch(None, jobs, out, ws=None)  # type: ignore[arg-type]
    got = {r["output"]: r for r in first["rows"]}
    assert {k: r["status"] for k, r in got.items()} == {
        "good": "done",
        "noface": "failed",
        "noaudio": "failed",
        "again": "done",
        "taken": "failed",
    }
    assert "blank.png: no face found" in got["noface"]["reason"] and "line 3" in got["noface"]["reason"]
    assert "audio file not found" in got["noaudio"]["reason"] and "missing.wav" in got["noaudio"]["reason"]
    assert str(out / "taken") in got["taken"]["reason"] and "--overwrite" in got["taken"]["reason"]
    assert (out / "taken" / "video.mp4").read_text() == "someone else's"
    assert fakes.loads == 1 and sorted(fakes.prepared) == ["blank.png", "face.jpg"]  # each image once
    assert first["images_prepared"] == 2 and (first["done"], first["failed"]) == (2, 3)
    recorded = batch.read_status(status_path(jobs, out))
    assert {k: r["status"] for k, r in recorded.items()} == {k: r["status"] for k, r in got.items()}
    lines = batch.summary_lines(first)
    assert len(lines) == 6 and lines[1].startswith("failed   noface: line 3:")

    (tmp_path / "missing.wav").write_bytes(b"x")  # the failed audio row can succeed now
    fakes.generated.clear()
    second = run_batch(None, jobs, out, ws=None)  # type: ignore[arg-type]
    assert sorted(fakes.generated) == ["noaudio"]  # only failed rows are redone; the blank image fails again
    assert {r["output"]: r["status"] for r in second["rows"]} == {
        "good": "skipped",
        "noface": "failed",
        "noaudio": "done",
        "again": "skipped",
        "taken": "failed",
    }
    fakes.generated.clear()
    third = run_batch(None, jobs, out, overwrite=True, ws=None)  # type: ignore[arg-type]
    assert fakes.generated == ["taken"] and third["failed"] == 1
    assert (out / "taken" / "video.mp4").read_text() == "face.jpg"
    fakes.generated.clear()
    fourth = run_batch(None, jobs, out, ws=None)  # type: ignore[arg-type]
    assert fakes.generated == [] and fourth["skipped"] == 4  # taken is this job file's output now

    (out / "good" / "video.mp4").unlink()  # a done row whose video went missing is generated again
    _csv(jobs, [{**rows[3], "audio": "missing.wav"}, rows[0]])  # a changed row is generated again too
    fifth = run_batch(None, jobs, out, ws=None)  # type: ignore[arg-type]
    assert sorted(fakes.generated) == ["again", "good"] and fifth["done"] == 2
    assert fakes.loads == 5  # one per run: each had work (the face-less row is tried again every time)
