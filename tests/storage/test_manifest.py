"""Manifest: schema, partial-update merge semantics, validation, and lock-protected concurrent upserts."""

from __future__ import annotations

import dataclasses
import datetime as dt
import multiprocessing as mp
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from emotalker.storage.manifest import MANIFEST_COLUMNS, SCHEMA, STATUS, ClipRecord, Manifest, clip_id_for


def _row(actor: str = "M003", emotion: str = "angry", level: int = 1, sentence: str = "001", **kw) -> dict:
    rec = {
        "clip_id": clip_id_for(actor, "front", emotion, level, sentence),
        "actor": actor,
        "view": "front",
        "emotion": emotion,
        "level": level,
        "sentence": sentence,
    }
    rec.update(kw)
    return rec


def test_clip_id_format() -> None:
    assert clip_id_for("M003", "front", "angry", 1, "001") == "M003_front_angry_level_1_001"


def test_missing_file_is_empty(tmp_path: Path) -> None:
    m = Manifest(tmp_path / "none.parquet")
    assert len(m) == 0 and m.records() == [] and m.get("x") is None and "x" not in m
    df = m.to_pandas()
    assert list(df.columns) == [n for n, _ in MANIFEST_COLUMNS] and len(df) == 0


def test_upsert_writes_exact_schema(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "manifest.parquet"
    m = Manifest(path)
    before = dt.datetime.now(dt.UTC)
    m.upsert([_row(video_path="/raw/a.mp4")])
    schema = pq.read_schema(path)
    assert [(f.name, f.type) for f in schema] == MANIFEST_COLUMNS
    assert schema.field("updated_at").type == pa.timestamp("us", tz="UTC")
    rec = m.get("M003_front_angry_level_1_001")
    assert rec["status"] == "raw" and rec["video_path"] == "/raw/a.mp4"
    assert rec["n_frames"] is None and rec["error"] is None
    assert rec["updated_at"] >= before.replace(microsecond=before.microsecond // 1000 * 1000) - dt.timedelta(
        seconds=1
    )
    assert not list(tmp_path.glob("sub/*.tmp"))  # temp file replaced, not left behind


def test_partial_update_preserves_other_columns(tmp_path: Path) -> None:
    m = Manifest(tmp_path / "m.parquet")
    m.upsert([_row(video_path="v.mp4", audio_path="a.m4a"), _row(sentence="002")])
    cid = "M003_front_angry_level_1_001"
    first = m.get(cid)
    m.upsert(
        [{"clip_id": cid, "status": "prepared", "n_frames": 75, "duration_s": 3.0, "audio_samples": 48000}]
    )
    rec = m.get(cid)
    assert rec["status"] == "prepared" and rec["n_frames"] == 75 and rec["duration_s"] == 3.0
    assert rec["video_path"] == "v.mp4" and rec["audio_path"] == "a.m4a" and rec["emotion"] == "angry"
    assert rec["updated_at"] >= first["updated_at"]
    # explicit None clears a nullable column; untouched rows keep their values
    m.upsert([{"clip_id": cid, "audio_path": None}])
    assert m.get(cid)["audio_path"] is None and m.get(cid)["video_path"] == "v.mp4"
    assert len(m) == 2 and m.get("M003_front_angry_level_1_002")["status"] == "raw"
    assert [r["clip_id"] for r in m.records()] == sorted(r["clip_id"] for r in m.records())


def test_select_and_pandas(tmp_path: Path) -> None:
    m = Manifest(tmp_path / "m.parquet")
    m.upsert(
        [
            _row("M003", status="prepared"),
            _row("W009", status="failed", error="no face"),
            _row("M012", status="prepared"),
            _row("M012", sentence="002"),
        ]
    )
    assert {r["actor"] for r in m.select(status="prepared")} == {"M003", "M012"}
    assert len(m.select(actors=["M012"])) == 2
    assert len(m.select(status="prepared", actors=["M012"])) == 1
    assert m.select(status="failed")[0]["error"] == "no face"
    with pytest.raises(ValueError, match="'done'"):
        m.select(status="done")
    df = m.to_pandas()
    assert len(df) == 4 and str(df["level"].dtype) == "int16"


@pytest.mark.parametrize(
    ("record", "pattern"),
    [
        (_row(colour="red"), "unknown column.*colour"),
        (_row(status="done"), "'status'.*done"),
        (_row(emotion="bored"), "'emotion'.*bored"),
        (_row(level=7), "'level'"),
        (_row(level="1"), "'level' must be an integer"),
        (_row(n_frames=-3), "'n_frames' must be >= 0"),
        (_row(n_frames=2.5), "'n_frames' must be an integer"),
        (_row(duration_s="long"), "'duration_s' must be a number"),
        (_row(video_path=3), "'video_path' must be a string"),
        (_row(actor=None), "'actor' may not be null"),
        ({"actor": "M003"}, "without 'clip_id'"),
    ],
)
def test_bad_values_raise_clear_errors(tmp_path: Path, record: dict, pattern: str) -> None:
    m = Manifest(tmp_path / "m.parquet")
    with pytest.raises(ValueError, match=pattern):
        m.upsert([record])
    assert not (tmp_path / "m.parquet").exists()


def test_new_row_needs_identity_columns(tmp_path: Path) -> None:
    m = Manifest(tmp_path / "m.parquet")
    m.upsert([_row()])
    with pytest.raises(ValueError, match=r"lacks required.*'actor'"):
        m.upsert([{"clip_id": "new_clip", "status": "raw"}])
    assert len(m) == 1  # nothing written by the failed batch


def test_bad_batch_is_all_or_nothing(tmp_path: Path) -> None:
    m = Manifest(tmp_path / "m.parquet")
    with pytest.raises(ValueError, match="bogus"):
        m.upsert([_row(), _row(sentence="002", bogus=1)])
    assert len(m) == 0


def test_reads_see_external_rewrite(tmp_path: Path) -> None:
    path = tmp_path / "m.parquet"
    a, b = Manifest(path), Manifest(path)
    a.upsert([_row()])
    assert len(b) == 1
    a.upsert([_row(sentence="002")])
    assert len(b) == 2  # cache invalidated by the replace


def test_file_missing_nullable_column_is_filled(tmp_path: Path) -> None:
    path = tmp_path / "old.parquet"
    cols = [n for n, _ in MANIFEST_COLUMNS if n != "fingerprint"]
    table = pa.Table.from_pylist(
        [{**_row(), "status": "raw", "updated_at": dt.datetime.now(dt.UTC)}], schema=SCHEMA
    ).select(cols)
    pq.write_table(table, path)
    rec = Manifest(path).get("M003_front_angry_level_1_001")
    assert rec["fingerprint"] is None and rec["actor"] == "M003"


def _worker(path: str, actor: str, n: int) -> None:
    m = Manifest(path)
    for i in range(n):
        m.upsert([_row(actor, sentence=f"{i:03d}")])


def test_concurrent_upserts_lose_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "m.parquet")
    ctx = mp.get_context("fork")
    n = 15
    procs = [ctx.Process(target=_worker, args=(path, actor, n)) for actor in ("M003", "W009")]
    for p in procs:
        p.start()
    reader, seen = Manifest(path), [0]
    while any(p.is_alive() for p in procs):  # lock-free reads never see a torn file or lose rows
        seen.append(len(reader))
        assert seen[-1] >= seen[-2]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    m = Manifest(path)
    assert len(m) == 2 * n
    assert {r["actor"] for r in m.records()} == {"M003", "W009"}


def test_status_values() -> None:
    assert STATUS == ("raw", "prepared", "failed")


def test_clip_record_round_trips_a_manifest_row(tmp_path: Path) -> None:
    m = Manifest(tmp_path / "m.parquet")
    m.upsert([_row(status="prepared", n_frames=75, duration_s=3.0, audio_samples=48000, video_path="v.mp4")])
    (rec,) = m.clips(status="prepared")
    assert isinstance(rec, ClipRecord)
    assert rec.clip_id == "M003_front_angry_level_1_001" and rec.level == 1 and rec.n_frames == 75
    assert rec.to_row() == m.get(rec.clip_id)  # the same columns and values as the Parquet row
    assert ClipRecord.from_row(rec.to_row()) == rec
    with pytest.raises(dataclasses.FrozenInstanceError):
        rec.status = "failed"  # type: ignore[misc]
    # a record is what upsert takes back: a changed copy is written, the rest of the row kept
    m.upsert([rec.replace(status="failed", error="no face")])
    again = m.clips()[0]
    assert (again.status, again.error, again.video_path, again.n_frames) == ("failed", "no face", "v.mp4", 75)
    assert m.clips(status="prepared") == []


def test_clip_record_refuses_bad_rows_naming_the_column() -> None:
    with pytest.raises(ValueError, match="column 'emotion'"):
        ClipRecord.from_row(_row(emotion="bored"))
    with pytest.raises(ValueError, match=r"lacks required column\(s\) \['sentence'\]"):
        ClipRecord.from_row({k: v for k, v in _row().items() if k != "sentence"})
    with pytest.raises(ValueError, match="column 'level'"):
        ClipRecord(**_row()).replace(level=7)
