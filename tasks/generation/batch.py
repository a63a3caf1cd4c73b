"""Batch generation jobs as plain functions (no Prefect): a job file of rows (image, audio, optional
emotion reference, output name) -> one output folder per row, a status per row, reruns that redo only
what is missing or failed.

Why not a loop of ``emotalker generate``: every call pays Python, Prefect, the model loads and the
face preparation of its image again. Here the models load once for the whole file, each distinct image
is prepared once (read, identity coefficients, renderer source crop; a failure is remembered too), and
the rows run in order in this process.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emotalker.configs.schema import PipelineConfig
from emotalker.storage.files import atomic_path
from emotalker.storage.workspace import Workspace
from emotalker.tasks.generation.animate import (
    InputError,
    driving_motion,
    identity_coefficients,
    load_speech,
    read_image,
)
from emotalker.tasks.generation.render import prepare_source
from emotalker.tasks.generation.run import (
    GenerationModels,
    check_method,
    generate_motion,
    load_generation_models,
    silence_warning,
    write_generation,
)

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("image", "audio", "output")
OPTIONAL_COLUMNS = ("emotion_reference",)
STATUS_COLUMNS = (
    "output",
    "status",
    "reason",
    "image",
    "audio",
    "emotion_reference",
    "seconds",
    "finished_at",
    "wrote",  # yes: this job file wrote into the row's output folder (a rerun may replace it)
)
DONE, FAILED, SKIPPED = "done", "failed", "skipped"
DONE_MARKER = "video.mp4"  # the last output a row writes: a done row without it is generated again


class JobFileError(InputError):
    """A job file that cannot be used as a whole (missing, empty, a column missing, duplicate outputs);
    the message names the file and, where it helps, the line."""


@dataclass(frozen=True)
class JobRow:
    """One row of a job file, paths resolved against the job file's folder."""

    line: int
    image: Path
    audio: Path
    output: str
    emotion_reference: Path | None = None

    def inputs(self) -> dict[str, str]:
        """The row's inputs as the status file records them (a changed row is generated again)."""
        ref = "" if self.emotion_reference is None else str(self.emotion_reference)
        return {"image": str(self.image), "audio": str(self.audio), "emotion_reference": ref}


def _check_output_name(name: str, where: str) -> str:
    """An output name is one folder name under the output root: no separators, no hidden or dot names."""
    if not name:
        raise JobFileError(f"{where}: empty output name")
    if "/" in name or "\\" in name or name.startswith(".") or name != name.strip():
        raise JobFileError(
            f"{where}: output name {name!r} must be a plain folder name (no /, \\ or leading .)"
        )
    return name


def _read_records(path: Path) -> list[tuple[int, dict[str, str]]]:
    """(line number, {column: value}) per row of a CSV (header line) or JSON lines file."""
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):  # anything else is read as CSV
        records = []
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise JobFileError(f"{path}:{n}: not a JSON object ({exc.msg})") from exc
            if not isinstance(obj, dict):
                raise JobFileError(f"{path}:{n}: each line must be a JSON object, got {type(obj).__name__}")
            records.append((n, {str(k): "" if v is None else str(v).strip() for k, v in obj.items()}))
        return records
    reader = csv.DictReader(text.splitlines())
    if reader.fieldnames is None:
        return []
    if any(f is None or not f.strip() for f in reader.fieldnames):
        raise JobFileError(f"{path}: the header has an empty column name")
    records = []
    for n, row in enumerate(reader, start=2):
        if None in row:
            raise JobFileError(f"{path}:{n}: more values than the header's {len(reader.fieldnames)} columns")
        values = {k.strip(): (v or "").strip() for k, v in row.items()}
        if any(values.values()):
            records.append((n, values))
    return records


def read_jobs(path: str | Path) -> list[JobRow]:
    """The rows of a job file (``.csv`` with a header, or ``.jsonl`` objects with the same keys).

    Columns: ``image``, ``audio``, ``output`` and optionally ``emotion_reference``; relative paths are
    relative to the job file's folder (a job file moves with its inputs). Anything wrong with the file as
    a whole is one :class:`JobFileError` naming it, before any model loads.
    """
    path = Path(path)
    if not path.is_file():
        raise JobFileError(f"job file not found: {path}")
    try:
        records = _read_records(path)
    except UnicodeDecodeError as exc:
        raise JobFileError(f"{path}: not a UTF-8 text file ({exc.reason})") from exc
    except csv.Error as exc:
        raise JobFileError(f"{path}: not a readable CSV file ({exc})") from exc
    if not records:
        raise JobFileError(f"{path}: no job rows (expected columns {', '.join(REQUIRED_COLUMNS)})")
    known = set(REQUIRED_COLUMNS) | set(OPTIONAL_COLUMNS)
    expected = f"expected {', '.join(REQUIRED_COLUMNS)} and optionally {', '.join(OPTIONAL_COLUMNS)}"
    base = path.parent
    rows: list[JobRow] = []
    first: dict[str, int] = {}
    for n, rec in records:
        where = f"{path}:{n}"
        if unknown := sorted(set(rec) - known):
            raise JobFileError(f"{where}: unknown column(s) {', '.join(unknown)}; {expected}")
        if missing := [c for c in REQUIRED_COLUMNS if not rec.get(c)]:
            raise JobFileError(f"{where}: missing {', '.join(missing)}; {expected}")
        output = _check_output_name(rec["output"], where)
        if output in first:
            raise JobFileError(f"{where}: duplicate output name {output!r} (also on line {first[output]})")
        first[output] = n
        ref = rec.get("emotion_reference") or None
        rows.append(
            JobRow(
                line=n,
                image=base / rec["image"],
                audio=base / rec["audio"],
                output=output,
                emotion_reference=None if ref is None else base / ref,
            )
        )
    return rows


# ------------------------------------------------------------------------------------------ status


def status_path(jobs: str | Path, out_dir: str | Path) -> Path:
    """``<out_dir>/<job file name>.status.csv``: beside the outputs, one per job file."""
    return Path(out_dir) / f"{Path(jobs).name}.status.csv"


def read_status(path: Path) -> dict[str, dict[str, str]]:
    """The last recorded status per output name (empty when the job file never ran here)."""
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as fh:
        return {row["output"]: row for row in csv.DictReader(fh) if row.get("output")}


def write_status(path: Path, records: dict[str, dict[str, str]]) -> None:
    """Rewrite the status file atomically (a kill mid-batch keeps the rows finished so far)."""
    with atomic_path(path, suffix=".partial.csv") as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=STATUS_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            for rec in records.values():
                writer.writerow({c: rec.get(c, "") for c in STATUS_COLUMNS})


def one_line(exc: BaseException) -> str:
    """An error as one line: input errors as their message, anything else with its type."""
    text = "; ".join(part.strip() for part in str(exc).splitlines() if part.strip()) or type(exc).__name__
    return text if isinstance(exc, ValueError | LookupError | OSError) else f"{type(exc).__name__}: {text}"


# ------------------------------------------------------------------------------------------ rows


@dataclass
class PreparedImage:
    """What generation needs from a reference image, computed once per distinct image in a batch."""

    image: Any
    identity: dict[str, Any]
    source: Any


class ImageCache:
    """Each distinct image prepared once (its failure too: a row sharing a face-less image fails at once)."""

    def __init__(self, models: GenerationModels) -> None:
        self.models = models
        self._done: dict[Path, PreparedImage | Exception] = {}

    def get(self, path: Path) -> PreparedImage:
        """The prepared image, or the error it raised the first time."""
        key = path.resolve()
        if key not in self._done:
            try:
                self._done[key] = prepare_image(path, self.models)
            except Exception as exc:  # noqa: BLE001 - remembered and raised for every row of this image
                self._done[key] = exc
        found = self._done[key]
        if isinstance(found, Exception):
            raise found
        return found

    def __len__(self) -> int:
        return len(self._done)


def prepare_image(path: Path, models: GenerationModels) -> PreparedImage:
    """Read the photo, its identity coefficients and the renderer's source crop (errors name the photo)."""
    img = read_image(path)  # its messages name the file
    try:
        identity = identity_coefficients(img, models.cfg, models.device)
        source = prepare_source(img, models.cfg, models.mode)
    except ValueError as exc:  # no face, a degenerate face box: the extractor's messages lack the path
        raise InputError(f"{path}: {exc}") from exc
    return PreparedImage(img, identity, source)


def run_row(row: JobRow, models: GenerationModels, images: ImageCache, out_dir: Path) -> dict[str, Any]:
    """Generate one row into ``out_dir``; raises with the row's one-line reason."""
    check_method(models.method, row.emotion_reference)
    wave, _ = load_speech(row.audio)  # cheap checks first: a missing audio never prepares its image
    if (silent := silence_warning(wave, row.audio)) is not None:
        log.warning(silent)
    prepared = images.get(row.image)
    reference = prepared.identity["motion"]
    if row.emotion_reference is not None:
        reference = driving_motion(row.emotion_reference, models.cfg, models.device)
    motion, _ = generate_motion(models, wave, reference)
    write_generation(
        models, out_dir, motion, prepared.identity, prepared.image, wave, row.audio, prepared.source
    )
    return {"frames": len(motion)}


def _clash(target: Path, previous: dict[str, str] | None, jobs: Path) -> str | None:
    """Why ``target`` may not be written: it holds files this job file did not write."""
    if (previous is not None and previous.get("wrote") == "yes") or not target.exists():
        return None
    if target.is_dir() and not any(target.iterdir()):
        return None
    return (
        f"output {target} already exists and was not produced by {jobs.name}; remove it, rename the row's "
        "output or pass --overwrite"
    )


def run_batch(
    cfg: PipelineConfig,
    jobs: str | Path,
    out_dir: str | Path | None = None,
    *,
    mode: str | None = None,
    model: str = "current",
    method: str = "emotalker",
    overwrite: bool = False,
    ws: Workspace,
) -> dict[str, Any]:
    """Every row of ``jobs`` into ``out_dir/<output>/`` (default: the job file's folder), in order.

    The job file is checked whole before any model loads; then the models load once. Rows already done
    with the same inputs (status file says so and their video exists) are skipped; failed rows are
    redone. A row whose output folder holds files this job file did not write fails, naming the folder,
    unless ``overwrite``. The status file is rewritten after every row.
    """
    jobs = Path(jobs)
    rows = read_jobs(jobs)
    out = Path(out_dir) if out_dir is not None else jobs.parent
    if out.exists() and not out.is_dir():
        raise JobFileError(f"output folder {out} is a file")
    check_method(method, None)
    spath = status_path(jobs, out)
    status = read_status(spath)
    todo = []
    results: list[dict[str, Any]] = []
    for row in rows:
        prev = status.get(row.output)
        finished = (out / row.output / DONE_MARKER).is_file()
        same = prev is not None and all(prev.get(k, "") == v for k, v in row.inputs().items())
        if prev is not None and prev.get("status") == DONE and same and finished:
            results.append({**prev, "status": SKIPPED})
        else:
            todo.append(row)
    log.info("generate-batch %s: %d row(s), %d to generate -> %s", jobs, len(rows), len(todo), out)
    models = None
    if todo:
        models = load_generation_models(cfg, method=method, mode=mode, model=model, ws=ws)
        if method == "emotalker":
            models.emotalker()  # once for the whole batch; a missing model fails the batch before any row
    images = ImageCache(models) if models is not None else None
    for row in todo:
        target = out / row.output
        started = time.perf_counter()
        prev = status.get(row.output)
        record = {"output": row.output, **row.inputs()}
        reason = None if overwrite else _clash(target, prev, jobs)
        attempted = reason is None
        if attempted:
            try:
                assert models is not None and images is not None
                run_row(row, models, images, target)
            except Exception as exc:  # noqa: BLE001 - one row's failure is recorded; the others go on
                reason = f"line {row.line}: {one_line(exc)}"
                log.debug("row %s failed", row.output, exc_info=True)
        wrote = (prev is not None and prev.get("wrote") == "yes") or (attempted and target.exists())
        record |= {
            "status": FAILED if reason else DONE,
            "reason": reason or "",
            "seconds": f"{time.perf_counter() - started:.2f}",
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "wrote": "yes" if wrote else "no",
        }
        status[row.output] = record
        write_status(spath, status)
        results.append(record)
        log.info("%s", row_line(record))
    order = {row.output: i for i, row in enumerate(rows)}
    results.sort(key=lambda r: order[r["output"]])
    counts = {s: sum(r["status"] == s for r in results) for s in (DONE, SKIPPED, FAILED)}
    return {
        "jobs": str(jobs),
        "out_dir": str(out),
        "status_file": str(spath),
        "rows": results,
        **counts,
        "images_prepared": len(images) if images is not None else 0,
    }


def row_line(record: dict[str, Any]) -> str:
    """One summary line per row: ``done``/``skipped`` with its output, or ``failed`` with the reason."""
    if record["status"] == FAILED:
        return f"failed   {record['output']}: {record['reason']}"
    took = (
        f" ({float(record['seconds']):.1f} s)" if record["status"] == DONE and record.get("seconds") else ""
    )
    return f"{record['status']:<8} {record['output']}{took}"


def summary_lines(result: dict[str, Any]) -> list[str]:
    """What the CLI prints: a line per row, then the totals and where the status file is."""
    lines = [row_line(r) for r in result["rows"]]
    lines.append(
        f"{result['done']} done, {result['skipped']} skipped (done before), {result['failed']} failed; "
        f"status: {result['status_file']}"
    )
    return lines
