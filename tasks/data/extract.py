"""Safe extraction of MEAD actor archives into one normalised tree, and a scan of that tree.

MEAD is distributed as per-actor tarballs in several shapes: an outer
``M003.tar`` holding ``video.tar`` + ``audio.tar``; ``video_1.tar`` + ``video_2.tar``; nested
``video/1.tar`` + ``video/2.tar``; sometimes an extra directory level (``M003/``, ``1/``, ``2/``); or
the inner tars lying loose in an ``M003/`` directory. Whatever the shape, the result is

    <raw_root>/<actor>/video/<view>/<emotion>/level_<n>/NNN.mp4
    <raw_root>/<actor>/audio/<emotion>/level_<n>/NNN.m4a

Files are classified by the tail of their path (view/emotion/level/file), so any prefix directories are
irrelevant. Everything is unpacked into a temp dir under ``raw_root`` and renamed into place with its
``.extracted`` marker already inside, so a killed extraction never leaves a tree that looks complete.

Archives are untrusted input: ``safe_extract`` validates every member before writing anything (no
absolute paths, no ``..``, no links leaving the destination or chaining through other links, no
devices / FIFOs) and additionally extracts with tarfile's ``data`` filter.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from emotalker.configs.constants import EMOTIONS, VIEWS
from emotalker.storage.files import file_lock
from emotalker.tasks.data.download import ARCHIVE_SUFFIXES, file_sha256, read_done_marker

log = logging.getLogger(__name__)

ACTOR_RE = re.compile(r"^[MW][0-9]{3}$")  # ASCII digits only (\d would take Arabic-Indic ones)
LEVEL_RE = re.compile(r"^level_(\d+)$")
VIDEO_EXTS: tuple[str, ...] = (".mp4",)
AUDIO_EXTS: tuple[str, ...] = (".m4a", ".wav")
MARKER = ".extracted"
MARKER_VERSION = 1
_MAX_NESTING = 4
_SPECIAL_KINDS = {
    tarfile.CHRTYPE: "character device",
    tarfile.BLKTYPE: "block device",
    tarfile.FIFOTYPE: "FIFO",
}


class ArchiveError(ValueError):
    """An archive that cannot be used (unreadable, no MEAD clips, actor unknown); names the archive."""


class UnsafeArchiveError(ArchiveError):
    """An archive member that would write outside the destination or is not a plain file/dir/link."""


# ------------------------------------------------------------------------------------------ safe extract


def _member_parts(name: str, archive: Path | str) -> tuple[str, ...]:
    """Split a member path, rejecting absolute paths and ``..`` (backslashes treated as separators)."""
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise UnsafeArchiveError(f"{archive}: member {name!r} has an absolute path")
    parts = tuple(p for p in name.replace("\\", "/").split("/") if p not in ("", "."))
    if ".." in parts:
        raise UnsafeArchiveError(f"{archive}: member {name!r} contains '..'")
    return parts


def _through_link(parts: tuple[str, ...], links: set[tuple[str, ...]]) -> tuple[str, ...] | None:
    """The first proper prefix of ``parts`` that is a symlink member, if any."""
    for i in range(1, len(parts)):
        if parts[:i] in links:
            return parts[:i]
    return None


def _check_members(tf: tarfile.TarFile, archive: Path | str) -> list[tarfile.TarInfo]:
    """Validate every member up front so that a bad archive extracts nothing at all."""
    members = tf.getmembers()
    links = {_member_parts(m.name, archive) for m in members if m.issym()}
    keep: list[tarfile.TarInfo] = []
    for m in members:
        parts = _member_parts(m.name, archive)
        if not parts:
            if m.isdir():
                continue  # the archive's own "./" entry
            raise UnsafeArchiveError(f"{archive}: member {m.name!r} has an empty path")
        via = _through_link(parts, links)
        if via is not None:
            raise UnsafeArchiveError(
                f"{archive}: member {m.name!r} goes through the symlink member {'/'.join(via)!r}"
            )
        if m.issym():
            target = m.linkname
            if target.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", target):
                raise UnsafeArchiveError(f"{archive}: symlink {m.name!r} points to absolute path {target!r}")
            resolved: list[str] = list(parts[:-1])
            for comp in target.replace("\\", "/").split("/"):
                if comp in ("", "."):
                    continue
                if comp == "..":
                    if not resolved:
                        raise UnsafeArchiveError(
                            f"{archive}: symlink {m.name!r} -> {target!r} points outside the destination"
                        )
                    resolved.pop()
                else:
                    resolved.append(comp)
                    if tuple(resolved) in links:
                        raise UnsafeArchiveError(
                            f"{archive}: symlink {m.name!r} -> {target!r} chains through another symlink"
                        )
        elif m.islnk():
            try:
                tparts = _member_parts(m.linkname, archive)
            except UnsafeArchiveError as exc:
                raise UnsafeArchiveError(
                    f"{archive}: hardlink {m.name!r} -> {m.linkname!r} points outside the destination"
                ) from exc
            # the target itself (not just its parents) may not be a symlink member either
            if not tparts or _through_link(tparts + ("",), links) is not None:
                raise UnsafeArchiveError(f"{archive}: hardlink {m.name!r} -> {m.linkname!r} is not allowed")
        elif not (m.isreg() or m.isdir()):
            kind = _SPECIAL_KINDS.get(m.type, f"member of type {m.type!r}")
            raise UnsafeArchiveError(f"{archive}: member {m.name!r} is a {kind}; only files, dirs, links")
        keep.append(m)
    return keep


def safe_extract(tar_path: str | Path, dest_dir: str | Path, label: str | None = None) -> list[Path]:
    """Extract a (possibly compressed) tar after validating all members; returns the non-directory paths.

    Raises UnsafeArchiveError naming the offending member before anything is written. Errors name the
    tar as ``label`` when given (the user's archive and the nested tar's path in it, never a temp dir).
    """
    tar_path, dest_dir = Path(tar_path), Path(dest_dir)
    name = label or str(tar_path)
    if not tar_path.is_file():
        raise FileNotFoundError(f"archive not found: {name}")
    try:
        tf = tarfile.open(tar_path, "r:*")
    except tarfile.TarError as exc:
        raise ArchiveError(f"{name}: not a readable tar archive: {exc}") from exc
    with tf:
        try:
            members = _check_members(tf, name)
            dest_dir.mkdir(parents=True, exist_ok=True)
            tf.extractall(dest_dir, members=members, filter="data")
        except tarfile.FilterError as exc:  # belt and braces: our checks should have caught it first
            raise UnsafeArchiveError(f"{name}: {_strip(str(exc), dest_dir)}") from exc
        except (tarfile.TarError, EOFError) as exc:
            raise ArchiveError(f"{name}: corrupt or truncated tar: {_strip(str(exc), dest_dir)}") from exc
    return [dest_dir.joinpath(*_member_parts(m.name, name)) for m in members if not m.isdir()]


def _strip(text: str, dest_dir: Path) -> str:
    """tarfile's messages may quote the destination; a temp dir means nothing to the user."""
    return text.replace(f"{dest_dir}{os.sep}", "").replace(str(dest_dir), ".")


# ------------------------------------------------------------------------------------------ MEAD actor


def _archive_stem(name: str) -> str | None:
    for suf in ARCHIVE_SUFFIXES:
        if name.endswith(suf):
            return name[: -len(suf)]
    return None


def _tars_under(root: Path) -> list[Path]:
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not p.is_symlink() and not p.name.startswith(".") and _archive_stem(p.name)
    )


def _actor_unit(archive: Path) -> tuple[str, Path, list[Path]]:
    """(actor, unit root, source tars): ``M003.tar`` alone, or every tar in the ``M003/`` dir it sits in."""
    if archive.is_dir():
        if not ACTOR_RE.match(archive.name):
            raise ArchiveError(f"{archive.name}: directory name is not a MEAD actor id (like M003 or W009)")
        sources = _tars_under(archive)
        if not sources:
            raise ArchiveError(f"{archive.name}: directory holds no tar archives")
        return archive.name, archive, sources
    stem = _archive_stem(archive.name)
    if stem is None:
        raise ArchiveError(f"{archive.name}: not a tar archive (expected {', '.join(ARCHIVE_SUFFIXES)})")
    if ACTOR_RE.match(stem):
        return stem, archive.parent, [archive]
    for parent in archive.parents:
        if ACTOR_RE.match(parent.name):
            return parent.name, parent, _tars_under(parent)
    raise ArchiveError(
        f"{archive.name}: cannot tell which actor it holds; name it like M003.tar (M or W and three ASCII "
        "digits) or put it in an M003/ directory"
    )


def _fingerprint(
    sources: list[Path], unit_root: Path, previous: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """Name/size/mtime/sha256 of each source; sha reused from our marker or the download marker if fresh."""
    known: dict[str, dict[str, Any]] = {}
    if previous:
        known = {a.get("name"): a for a in previous.get("archives", []) if isinstance(a, dict)}
    out = []
    for src in sources:
        st = src.stat()
        name = src.relative_to(unit_root).as_posix()
        sha = None
        for rec in (known.get(name), read_done_marker(src)):
            if rec and rec.get("size") == st.st_size and rec.get("mtime_ns") == st.st_mtime_ns:
                sha = rec.get("sha256")
                break
        out.append(
            {"name": name, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha or file_sha256(src)}
        )
    return out


def _read_marker(actor_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((actor_dir / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _same(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    def key(x: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return [(r.get("name"), r.get("size"), r.get("sha256")) for r in x]

    return key(a) == key(b)


def _label(path: Path, labels: dict[Path, str]) -> str:
    """``M003.tar: video.tar``: the user's archive, then the path of each nested tar inside its parent."""
    for parent in path.parents:
        if parent in labels:
            return f"{labels[parent]}: {path.relative_to(parent).as_posix()}"
    return path.name


def _expand_nested(stage: Path, archive: str, labels: dict[Path, str]) -> None:
    """Unpack tars found inside the extracted tree (video.tar, video/1.tar, ...) in place, then drop them.

    ``labels`` maps each extraction directory to the user-facing name of the tar it came from.
    """
    for _ in range(_MAX_NESTING):
        inner = _tars_under(stage)
        if not inner:
            return
        for t in inner:
            label = _label(t, labels)
            dest = t.with_name(f"{_archive_stem(t.name)}.unpacked")
            safe_extract(t, dest, label)
            labels[dest] = label
            t.unlink()
    raise ArchiveError(f"{archive}: tar archives nested more than {_MAX_NESTING} levels deep")


def _classify(parts: tuple[str, ...]) -> tuple[str, ...] | None:
    """Normalised relative path for a MEAD media file, judged by the tail of its path; None if not one."""
    name = parts[-1]
    ext = os.path.splitext(name)[1].lower()
    if name.startswith("."):
        return None
    if ext in VIDEO_EXTS and len(parts) >= 4:
        view, emo, lvl = (p.lower() for p in parts[-4:-1])
        m = LEVEL_RE.match(lvl)
        if view in VIEWS and emo in EMOTIONS and m:
            return ("video", view, emo, f"level_{int(m.group(1))}", name)
    if ext in AUDIO_EXTS and len(parts) >= 3:
        emo, lvl = (p.lower() for p in parts[-3:-1])
        m = LEVEL_RE.match(lvl)
        if emo in EMOTIONS and m:
            return ("audio", emo, f"level_{int(m.group(1))}", name)
    return None


def _normalise(stage: Path, tree: Path, actor: str, archive: str) -> tuple[int, int]:
    counts = {"video": 0, "audio": 0}
    other_actors: set[str] = set()
    skipped = 0
    for f in sorted(stage.rglob("*")):
        if f.is_symlink() or not f.is_file():
            continue
        parts = f.relative_to(stage).parts
        other_actors.update(p for p in parts[:-1] if ACTOR_RE.match(p) and p != actor)
        rel = _classify(parts)
        if rel is None:
            skipped += 1
            continue
        dest = tree.joinpath(*rel)
        if dest.exists():
            log.warning("%s: %s appears twice in the archive; keeping the later copy", archive, "/".join(rel))
        else:
            counts[rel[0]] += 1
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(f, dest)
    if other_actors:
        log.warning(
            "%s: holds directories named %s but is filed as actor %s", archive, sorted(other_actors), actor
        )
    if skipped:
        log.info("%s: ignored %d files that are not MEAD clips", archive, skipped)
    return counts["video"], counts["audio"]


def extract_mead_actor(archive: str | Path, raw_root: str | Path) -> Path:
    """Extract one actor's archive(s) into ``<raw_root>/<actor>`` in the normalised layout; returns that dir.

    ``archive`` is ``M003.tar`` (any internal shape), an ``M003/`` directory of tars, or a tar inside such
    a directory (then the whole directory is the unit, so calling it for ``video.tar`` and ``audio.tar``
    extracts once). Skipped when the ``.extracted`` marker records the same archive names/sizes/sha256.
    """
    archive, raw_root = Path(archive), Path(raw_root)
    if not archive.exists():
        raise FileNotFoundError(f"archive not found: {archive}")
    actor, unit_root, sources = _actor_unit(archive)
    raw_root.mkdir(parents=True, exist_ok=True)
    actor_dir = raw_root / actor
    with file_lock(raw_root / f".{actor}.lock"):
        previous = _read_marker(actor_dir)
        fingerprint = _fingerprint(sources, unit_root, previous)
        if previous and _same(previous.get("archives", []), fingerprint):
            log.info("%s: already extracted from %s", actor_dir, archive)
            return actor_dir
        for stale in raw_root.glob(f".tmp-extract-{actor}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-extract-{actor}-", dir=raw_root))
        name = archive.name  # what errors call the user's archive (never the temp dir it unpacks into)
        try:
            stage = tmp / "stage"
            labels: dict[Path, str] = {}
            for i, src in enumerate(sources):
                dest = stage / f"{i:02d}_{_archive_stem(src.name)}"
                labels[dest] = src.relative_to(unit_root.parent).as_posix()
                safe_extract(src, dest, labels[dest])
            _expand_nested(stage, name, labels)
            tree = tmp / actor
            n_video, n_audio = _normalise(stage, tree, actor, name)
            if n_video + n_audio == 0:
                raise ArchiveError(f"{name}: no MEAD clips (video/<view>/<emotion>/level_<n>/*.mp4) found")
            marker = {
                "version": MARKER_VERSION,
                "actor": actor,
                "archives": fingerprint,
                "videos": n_video,
                "audios": n_audio,
            }
            (tree / MARKER).write_text(json.dumps(marker, indent=1))
            if actor_dir.exists():
                log.warning("%s: replacing a tree that does not match %s", actor_dir, archive)
                os.replace(actor_dir, tmp / "old")
            os.replace(tree, actor_dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("%s: %d videos, %d audio files from %s", actor_dir, n_video, n_audio, archive)
    return actor_dir


# ------------------------------------------------------------------------------------------ scan


def scan_mead_tree(
    raw_root: str | Path, views: tuple[str, ...] | list[str] = ("front",)
) -> list[dict[str, Any]]:
    """Every clip of the normalised tree for the given views, sorted; ``audio_path`` None when missing."""
    raw_root = Path(raw_root)
    if not raw_root.is_dir():
        raise FileNotFoundError(f"MEAD raw directory not found: {raw_root}")
    bad = [v for v in views if v not in VIEWS]
    if bad:
        raise ValueError(f"unknown MEAD views {bad}; MEAD has {list(VIEWS)}")
    clips: list[dict[str, Any]] = []
    for actor_dir in sorted(raw_root.iterdir()):
        if not actor_dir.is_dir() or not ACTOR_RE.match(actor_dir.name):
            continue
        for view in views:
            vroot = actor_dir / "video" / view
            if not vroot.is_dir():
                continue
            for emo_dir in sorted(vroot.iterdir()):
                if emo_dir.name not in EMOTIONS or not emo_dir.is_dir():
                    continue
                for lvl_dir in sorted(emo_dir.iterdir()):
                    m = LEVEL_RE.match(lvl_dir.name)
                    if not m or not lvl_dir.is_dir():
                        continue
                    adir = actor_dir / "audio" / emo_dir.name / lvl_dir.name
                    for video in sorted(lvl_dir.iterdir()):
                        if video.name.startswith(".") or video.suffix.lower() not in VIDEO_EXTS:
                            continue
                        audio = next(
                            (a for ext in AUDIO_EXTS if (a := adir / f"{video.stem}{ext}").is_file()), None
                        )
                        clips.append(
                            {
                                "actor": actor_dir.name,
                                "view": view,
                                "emotion": emo_dir.name,
                                "level": int(m.group(1)),
                                "sentence": video.stem,
                                "video_path": video,
                                "audio_path": audio,
                            }
                        )
    return clips
