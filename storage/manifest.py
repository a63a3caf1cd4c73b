"""The clip manifest: one Parquet row per MEAD clip, merged by ``clip_id`` under a file lock.

Several processes (Dask workers, Prefect tasks) update the manifest; each ``upsert`` takes an exclusive
``file_lock`` on ``<path>.lock``, re-reads the file inside the lock, merges, writes a temp file and
``os.replace``s it, so readers always see a whole file and concurrent writers never lose rows.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import zoneinfo
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from emotalker.configs.constants import EMOTIONS, LEVELS, VIEWS
from emotalker.storage.files import atomic_path, file_lock

if TYPE_CHECKING:
    import pandas as pd  # only for to_pandas: pyarrow imports it there, reading rows never needs it

MANIFEST_COLUMNS: list[tuple[str, pa.DataType]] = [
    ("clip_id", pa.string()),
    ("actor", pa.string()),
    ("view", pa.string()),
    ("emotion", pa.string()),
    ("level", pa.int16()),
    ("sentence", pa.string()),
    ("video_path", pa.string()),
    ("audio_path", pa.string()),
    ("prepared_video", pa.string()),
    ("prepared_audio", pa.string()),
    ("n_frames", pa.int32()),
    ("duration_s", pa.float64()),
    ("audio_samples", pa.int64()),
    ("status", pa.string()),
    ("error", pa.string()),
    ("fingerprint", pa.string()),
    ("updated_at", pa.timestamp("us", tz="UTC")),
]
REQUIRED_COLUMNS: tuple[str, ...] = ("clip_id", "actor", "view", "emotion", "level", "sentence", "status")
STATUS: tuple[str, ...] = ("raw", "prepared", "failed")
SCHEMA = pa.schema([pa.field(n, t, nullable=n not in REQUIRED_COLUMNS) for n, t in MANIFEST_COLUMNS])
_TYPES = dict(MANIFEST_COLUMNS)
_INT_RANGES = {
    "level": (-(2**15), 2**15 - 1),
    "n_frames": (-(2**31), 2**31 - 1),
    "audio_samples": (-(2**63), 2**63 - 1),
}


def clip_id_for(actor: str, view: str, emotion: str, level: int, sentence: str) -> str:
    """Canonical clip id, e.g. ``M003_front_angry_level_1_001``."""
    return f"{actor}_{view}_{emotion}_level_{int(level)}_{sentence}"


def _validate_value(clip_id: Any, name: str, value: Any) -> Any:
    """Type-check (and lightly coerce) one field; raise ValueError naming clip and column."""
    if name == "updated_at":
        return value
    if value is None:
        if name in REQUIRED_COLUMNS:
            raise ValueError(f"manifest row {clip_id!r}: column {name!r} may not be null")
        return None
    typ = _TYPES[name]
    where = f"manifest row {clip_id!r}: column {name!r}"
    if pa.types.is_string(typ):
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if not isinstance(value, str):
            raise ValueError(f"{where} must be a string, got {type(value).__name__} {value!r}")
        if name in ("clip_id", "actor", "sentence") and not value:
            raise ValueError(f"{where} may not be empty")
        if name == "status" and value not in STATUS:
            raise ValueError(f"{where} must be one of {list(STATUS)}, got {value!r}")
        if name == "emotion" and value not in EMOTIONS:
            raise ValueError(f"{where} must be one of {list(EMOTIONS)}, got {value!r}")
        if name == "view" and value not in VIEWS:
            raise ValueError(f"{where} must be one of {list(VIEWS)}, got {value!r}")
        return value
    if pa.types.is_integer(typ):
        if isinstance(value, bool) or not hasattr(value, "__index__"):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise ValueError(f"{where} must be an integer, got {type(value).__name__} {value!r}")
        value = int(value)
        lo, hi = _INT_RANGES[name]
        if not lo <= value <= hi:
            raise ValueError(f"{where} value {value} does not fit {typ}")
        if name == "level" and value not in LEVELS:
            raise ValueError(f"{where} must be one of {list(LEVELS)}, got {value}")
        if name in ("n_frames", "audio_samples") and value < 0:
            raise ValueError(f"{where} must be >= 0, got {value}")
        return value
    if pa.types.is_floating(typ):
        if isinstance(value, bool | str) or not hasattr(value, "__float__"):
            raise ValueError(f"{where} must be a number, got {type(value).__name__} {value!r}")
        value = float(value)
        if math.isnan(value) or value < 0:
            raise ValueError(f"{where} must be a non-negative number, got {value}")
        return value
    raise AssertionError(f"unhandled column type {typ}")  # pragma: no cover


def _validate_partial(record: Any) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise ValueError(f"manifest records must be dicts, got {type(record).__name__}")
    unknown = sorted(set(record) - set(_TYPES))
    cid = record.get("clip_id")
    if unknown:
        raise ValueError(f"manifest row {cid!r}: unknown column(s) {unknown}; known: {list(_TYPES)}")
    if "clip_id" not in record:
        raise ValueError(f"manifest record without 'clip_id': {record!r}")
    return {k: _validate_value(cid, k, v) for k, v in record.items()}


def _read_table(path: Path) -> tuple[pa.Table, tuple[int, int, int]]:
    """Read the parquet file conformed to SCHEMA (missing nullable columns filled with nulls).

    The file is opened once so a concurrent ``os.replace`` cannot mix footer and pages of two versions;
    also returns the (inode, mtime, size) of exactly the version read, for caching.
    """
    with open(path, "rb") as fh:
        st = os.fstat(fh.fileno())
        table = pq.ParquetFile(fh).read()  # one file: no dataset layer (it would import pandas)
    key = (st.st_ino, st.st_mtime_ns, st.st_size)
    extra = sorted(set(table.column_names) - set(_TYPES))
    if extra:
        raise ValueError(f"manifest {path} has unknown column(s) {extra}")
    cols = []
    for field in SCHEMA:
        if field.name in table.column_names:
            cols.append(table.column(field.name).cast(field.type))
        elif field.nullable:
            cols.append(pa.nulls(table.num_rows, field.type))
        else:
            raise ValueError(f"manifest {path} lacks required column {field.name!r}")
    return pa.Table.from_arrays(cols, schema=SCHEMA), key


_UTC = zoneinfo.ZoneInfo("UTC")  # what pyarrow gives a timestamp column with tz="UTC"


def _rows(table: pa.Table) -> list[dict]:
    """``table.to_pylist()`` with ``updated_at`` read as a naive column and set to UTC afterwards: the same
    values, but pyarrow's tz-aware conversion imports pandas (~0.4 s on every manifest read)."""
    i = table.schema.get_field_index("updated_at")
    rows = table.set_column(i, "updated_at", table.column(i).cast(pa.timestamp("us"))).to_pylist()
    for r in rows:
        if r["updated_at"] is not None:
            r["updated_at"] = r["updated_at"].replace(tzinfo=_UTC)
    return rows


@dataclass(frozen=True, slots=True)
class ClipRecord:
    """One manifest row, typed and immutable: what the flows hand to tasks instead of a loose dict.

    Field names and order are the Parquet columns (``MANIFEST_COLUMNS``); ``from_row`` validates a row
    as ``upsert`` does, ``to_row`` gives the Parquet row back, so a record round-trips unchanged.
    """

    clip_id: str
    actor: str
    view: str
    emotion: str
    level: int
    sentence: str
    video_path: str | None = None
    audio_path: str | None = None
    prepared_video: str | None = None
    prepared_audio: str | None = None
    n_frames: int | None = None
    duration_s: float | None = None
    audio_samples: int | None = None
    status: str = "raw"
    error: str | None = None
    fingerprint: str | None = None
    updated_at: dt.datetime | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> ClipRecord:
        """A record from a manifest row (all required columns present); a bad value raises naming it."""
        checked = _validate_partial(dict(row))
        missing = [c for c in REQUIRED_COLUMNS if checked.get(c) is None and c != "status"]
        if missing:
            raise ValueError(f"manifest row {checked['clip_id']!r} lacks required column(s) {missing}")
        if checked.get("status") is None:
            checked.pop("status", None)
        return cls(**checked)

    def to_row(self) -> dict[str, Any]:
        """The Parquet row (a plain dict keyed by column name)."""
        return asdict(self)

    def replace(self, **changes: Any) -> ClipRecord:
        """A copy with ``changes`` applied and validated."""
        return ClipRecord.from_row({**self.to_row(), **changes})


assert [f.name for f in fields(ClipRecord)] == [n for n, _ in MANIFEST_COLUMNS], "ClipRecord != columns"


class Manifest:
    """Parquet-backed clip table keyed by ``clip_id``; a missing file is an empty manifest."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.lock_path = Path(str(self.path) + ".lock")
        self._cache_key: tuple[int, int, int] | None = None
        self._cache: list[dict] = []

    def __repr__(self) -> str:
        return f"Manifest({str(self.path)!r})"

    # ------------------------------------------------------------------ reads
    def records(self) -> list[dict]:
        """All rows (sorted by clip_id) as dicts; cached until the file changes."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._cache_key, self._cache = None, []
            return []
        if (st.st_ino, st.st_mtime_ns, st.st_size) != self._cache_key:
            try:
                table, key = _read_table(self.path)
            except FileNotFoundError:
                return []
            self._cache, self._cache_key = _rows(table), key
        return [dict(r) for r in self._cache]

    def get(self, clip_id: str) -> dict | None:
        """The row for clip_id, or None."""
        for r in self.records():
            if r["clip_id"] == clip_id:
                return r
        return None

    def __len__(self) -> int:
        return len(self.records())

    def __contains__(self, clip_id: object) -> bool:
        return any(r["clip_id"] == clip_id for r in self.records())

    def __iter__(self) -> Iterator[dict]:
        return iter(self.records())

    def to_pandas(self) -> pd.DataFrame:
        """The manifest as a DataFrame (empty with all columns when there is no file)."""
        try:
            return _read_table(self.path)[0].to_pandas()
        except FileNotFoundError:
            return SCHEMA.empty_table().to_pandas()

    def select(self, status: str | None = None, actors: Iterable[str] | None = None) -> list[dict]:
        """Rows filtered by status and/or actor set."""
        if status is not None and status not in STATUS:
            raise ValueError(f"unknown status {status!r}; expected one of {list(STATUS)}")
        if isinstance(actors, str):
            actors = [actors]
        actor_set = None if actors is None else set(actors)
        return [
            r
            for r in self.records()
            if (status is None or r["status"] == status) and (actor_set is None or r["actor"] in actor_set)
        ]

    def clips(self, status: str | None = None, actors: Iterable[str] | None = None) -> list[ClipRecord]:
        """``select`` as typed records (sorted by clip_id)."""
        return [ClipRecord(**r) for r in self.select(status=status, actors=actors)]

    # ------------------------------------------------------------------ writes
    def upsert(self, records: Iterable[dict | ClipRecord]) -> None:
        """Merge rows by clip_id: given keys overwrite, other columns keep their values; new rows need
        clip_id, actor, view, emotion, level, sentence (status defaults to "raw"); updated_at is set here.
        """
        # validate everything before touching the file
        partials = [_validate_partial(r.to_row() if isinstance(r, ClipRecord) else r) for r in records]
        if not partials:
            return
        now = dt.datetime.now(dt.UTC)
        with file_lock(self.lock_path):
            rows: dict[str, dict] = {}
            if self.path.exists():
                rows = {r["clip_id"]: r for r in _rows(_read_table(self.path)[0])}
            for p in partials:
                cid = p["clip_id"]
                row = rows.get(cid)
                if row is None:
                    row = {name: None for name in _TYPES}
                    row["status"] = "raw"
                    missing = [c for c in REQUIRED_COLUMNS if c != "status" and p.get(c) is None]
                    if missing:
                        raise ValueError(f"new manifest row {cid!r} lacks required column(s) {missing}")
                row.update(p)
                row["updated_at"] = now
                rows[cid] = row
            table = pa.Table.from_pylist([rows[k] for k in sorted(rows)], schema=SCHEMA)
            with atomic_path(self.path, fsync=True) as tmp:
                pq.write_table(table, tmp)
