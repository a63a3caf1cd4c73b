"""Resumable, verified download of MEAD archives (HTTP(S), ``file://`` URLs and local mirror directories).

MEAD actor archives are several GB each and the hosting is flaky, so every transfer streams into
``<name>.part``, resumes with an HTTP ``Range`` request after a dropped connection, retries with
exponential backoff, checks size / sha256 when the manifest gives them and only then renames the file
into place and writes ``<name>.done``. A rerun whose marker still matches the file does no I/O on the
network at all.

URL manifest formats (``load_url_manifest``):

* JSON or YAML (``.json`` / ``.yaml`` / ``.yml``): a list of entries, or a mapping with an ``archives``
  list. An entry is a URL string or a mapping ``{url, name?, sha256?, size?}``.
* plain text (any other file): one entry per line, ``URL [name=N] [sha256=H] [size=B]``; a bare
  64-hex-digit token is taken as the sha256 and a bare integer as the size; ``#`` starts a comment.
* a directory (a local mirror): every ``*.tar`` / ``*.tar.gz`` / ``*.tgz`` below it, named by its path
  relative to the directory (``M003.tar``, ``W009/video.tar``).

Relative local paths in a manifest resolve against the manifest's directory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import requests
import yaml

from emotalker.configs.secrets import redact_secrets
from emotalker.storage.files import write_json_atomic

log = logging.getLogger(__name__)

ARCHIVE_SUFFIXES: tuple[str, ...] = (".tar", ".tar.gz", ".tgz")
_SHA_RE = re.compile(r"^[0-9a-fA-F]{64}$")
_ENTRY_KEYS = {"url", "name", "sha256", "size"}
_HASH_CHUNK = 1 << 20

Progress = Callable[[int, int | None], None]


class ManifestError(ValueError):
    """A URL manifest that cannot be used; the message names the file and the entry."""


class DownloadError(OSError):
    """A transfer that failed for good (HTTP error status, retries exhausted)."""


class TransientDownloadError(DownloadError):
    """A transfer that failed in a way worth retrying later (dropped connection, 5xx, timeout).

    The ``.part`` file is kept, so a retry (this module's loop or a Prefect task retry) resumes from it.
    """


class ChecksumError(DownloadError):
    """Downloaded bytes differ from the manifest's size or sha256; the partial file has been removed."""

    def __init__(self, path: Path, what: str, expected: object, got: object) -> None:
        super().__init__(f"{path}: {what} mismatch: expected {expected}, got {got}")
        self.path, self.what, self.expected, self.got = path, what, expected, got


class ArchivesFailed(ValueError):
    """Some archives could not be downloaded or extracted; the good ones were. Names each bad one."""


class _Transient(Exception):
    """Internal: a failure worth retrying (dropped connection, truncated body, 5xx)."""


@dataclass(frozen=True)
class ArchiveSpec:
    """One archive to fetch: where from, the file name to store it under, and what it must hash to."""

    url: str
    name: str
    sha256: str | None = None
    size: int | None = None


# --------------------------------------------------------------------------------------------- manifest


def _is_archive(p: Path) -> bool:
    return p.is_file() and p.name.endswith(ARCHIVE_SUFFIXES)


def _check_name(name: str, where: str) -> str:
    """Names become paths under the download dir, so they must stay inside it."""
    if not name or name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise ManifestError(f"{where}: name {name!r} must be a relative file name")
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if any(p in ("..", ".") for p in parts) or not parts:
        raise ManifestError(f"{where}: name {name!r} may not contain '.' or '..' components")
    if name.endswith((".part", ".done")):
        raise ManifestError(f"{where}: name {name!r} may not end in .part or .done (reserved)")
    return "/".join(parts)


def _normalise_url(url: str, base: Path, where: str) -> str:
    """http(s) and file URLs stay as they are; bare paths become absolute file:// URLs."""
    scheme = urllib.parse.urlparse(url).scheme.lower()
    if scheme in ("http", "https", "file"):
        return url
    if scheme and len(scheme) > 1:
        raise ManifestError(f"{where}: unsupported URL scheme {scheme!r} in {url!r} (use http, https, file)")
    p = Path(url).expanduser()
    return (p if p.is_absolute() else base / p).resolve().as_uri()


def _default_name(url: str, where: str) -> str:
    path = urllib.parse.urlparse(url).path
    name = urllib.parse.unquote(path.rstrip("/").rsplit("/", 1)[-1])
    if not name:
        raise ManifestError(f"{where}: cannot derive a file name from {url!r}; give 'name'")
    return name


def _make_spec(entry: Any, base: Path, where: str) -> ArchiveSpec:
    if isinstance(entry, str):
        entry = {"url": entry}
    if not isinstance(entry, dict):
        raise ManifestError(f"{where}: entry must be a URL or a mapping, got {type(entry).__name__}")
    unknown = sorted(set(entry) - _ENTRY_KEYS)
    if unknown:
        raise ManifestError(f"{where}: unknown keys {unknown}; allowed {sorted(_ENTRY_KEYS)}")
    url = entry.get("url")
    if not isinstance(url, str) or not url.strip():
        raise ManifestError(f"{where}: 'url' is required and must be a non-empty string")
    url = _normalise_url(url.strip(), base, where)
    name = entry.get("name")
    if name is None:
        name = _default_name(url, where)
    if not isinstance(name, str):
        raise ManifestError(f"{where}: 'name' must be a string")
    name = _check_name(name, where)
    sha = entry.get("sha256")
    if sha is not None:
        if not isinstance(sha, str) or not _SHA_RE.match(sha):
            raise ManifestError(f"{where}: sha256 {sha!r} must be 64 hex digits")
        sha = sha.lower()
    size = entry.get("size")
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ManifestError(f"{where}: size {size!r} must be a non-negative integer")
    return ArchiveSpec(url=url, name=name, sha256=sha, size=size)


def _parse_text_line(line: str, where: str) -> dict[str, Any]:
    tokens = line.split()
    entry: dict[str, Any] = {"url": tokens[0]}
    for tok in tokens[1:]:
        if "=" in tok:
            key, val = tok.split("=", 1)
            entry[key] = int(val) if key == "size" and val.isdigit() else val
        elif _SHA_RE.match(tok):
            entry["sha256"] = tok
        elif tok.isdigit():
            entry["size"] = int(tok)
        else:
            raise ManifestError(f"{where}: cannot understand {tok!r} (use name=, sha256=, size=)")
    return entry


def _mirror_specs(root: Path) -> list[ArchiveSpec]:
    files = sorted(p for p in root.rglob("*") if _is_archive(p) and not p.name.startswith("."))
    if not files:
        raise ManifestError(f"mirror directory {root} holds no {'/'.join(ARCHIVE_SUFFIXES)} archives")
    return [
        ArchiveSpec(url=p.resolve().as_uri(), name=p.relative_to(root).as_posix(), size=p.stat().st_size)
        for p in files
    ]


def load_url_manifest(path: str | Path) -> list[ArchiveSpec]:
    """Read the list of archives to fetch (JSON / YAML / text manifest, or a local mirror directory)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"URL manifest not found: {path}")
    if path.is_dir():
        return _mirror_specs(path)
    base = path.resolve().parent
    text = path.read_text()
    suffix = path.suffix.lower()
    entries: list[tuple[str, Any]]
    if suffix in (".json", ".yaml", ".yml"):
        try:
            data = json.loads(text) if suffix == ".json" else yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError) as exc:
            raise ManifestError(f"{path}: not valid {suffix[1:].upper()}: {exc}") from exc
        if isinstance(data, dict):
            if "archives" not in data:
                raise ManifestError(f"{path}: a mapping manifest needs an 'archives' list")
            data = data["archives"]
        if not isinstance(data, list):
            raise ManifestError(f"{path}: expected a list of archives, got {type(data).__name__}")
        entries = [(f"{path}: entry {i}", e) for i, e in enumerate(data)]
    else:
        entries = []
        for n, raw in enumerate(text.splitlines(), start=1):
            line = raw.split("#", 1)[0].strip()
            if line:
                where = f"{path}: line {n}"
                entries.append((where, _parse_text_line(line, where)))
    if not entries:
        raise ManifestError(f"{path}: lists no archives")
    specs = [_make_spec(e, base, where) for where, e in entries]
    seen: dict[str, str] = {}
    for (where, _), s in zip(entries, specs, strict=True):
        if s.name in seen:
            raise ManifestError(f"{where}: name {s.name!r} already used by {seen[s.name]}")
        seen[s.name] = where
    return specs


# --------------------------------------------------------------------------------------------- download


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def read_done_marker(path: Path) -> dict[str, Any] | None:
    """The ``<name>.done`` record of a finished download (sha256, size, mtime_ns), or None."""
    marker = path.with_name(path.name + ".done")
    try:
        data = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_marker(final: Path, sha: str, size: int, source: dict[str, Any] | None) -> None:
    marker = final.with_name(final.name + ".done")
    rec = {"sha256": sha, "size": size, "mtime_ns": final.stat().st_mtime_ns, "source": source}
    write_json_atomic(marker, rec)


def source_identity(
    spec: ArchiveSpec, timeout_s: float = 30.0, session: requests.Session | None = None
) -> dict[str, Any] | None:
    """What identifies the archive at its source now: size and mtime of a local file, ETag /
    Last-Modified / Content-Length of a HEAD request; None when the source does not say (or is down).

    A download is complete only for the source it came from: when this changes, it is fetched again.
    """
    local = _local_source(spec.url)
    if local is not None:
        try:
            st = local.stat()
        except OSError:
            return None
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    try:
        resp = (session or requests).head(spec.url, timeout=timeout_s, allow_redirects=True)
    except Exception:  # noqa: BLE001 - an unreachable source cannot tell us it changed
        return None
    if not resp.ok:
        return None
    heads = {"etag": "ETag", "last_modified": "Last-Modified", "size": "Content-Length"}
    ident = {k: resp.headers.get(h) for k, h in heads.items() if resp.headers.get(h)}
    return ident or None


def _is_done(spec: ArchiveSpec, final: Path, source: dict[str, Any] | None = None) -> bool:
    """True when the marker, the file on disk, the spec and the source agree (re-hash only if the mtime
    moved); a marker and a ``source`` that both know the source must name the same one."""
    rec = read_done_marker(final)
    if rec is None or not final.is_file():
        return False
    if source is not None and rec.get("source") is not None and rec["source"] != source:
        was = rec["source"]
        log.warning("%s: its source changed since it was downloaded (%s, was %s)", final, source, was)
        return False
    st = final.stat()
    if rec.get("size") != st.st_size or (spec.size is not None and spec.size != st.st_size):
        return False
    if spec.sha256 is not None and rec.get("sha256") != spec.sha256:
        return False
    if rec.get("mtime_ns") == st.st_mtime_ns:
        return True
    if file_sha256(final) != rec.get("sha256"):
        return False
    _write_marker(final, rec["sha256"], st.st_size, rec.get("source"))  # the next check is cheap again
    return True


def _local_source(url: str) -> Path | None:
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme.lower() == "file":
        if parsed.netloc not in ("", "localhost"):
            raise DownloadError(f"file URL with a remote host is not supported: {redact_secrets(url)}")
        return Path(urllib.request.url2pathname(parsed.path))
    if parsed.scheme.lower() in ("http", "https"):
        return None
    return Path(url)


def _copy_local(src: Path, part: Path, chunk_bytes: int, progress: Progress | None) -> None:
    """Resumable local copy: continue from the end of ``part`` when it is a prefix-sized copy."""
    if not src.is_file():
        raise FileNotFoundError(f"archive source not found: {src}")
    total = src.stat().st_size
    offset = part.stat().st_size if part.exists() else 0
    if offset > total:
        part.unlink()
        offset = 0
    with open(src, "rb") as fin, open(part, "ab" if offset else "wb") as fout:
        fin.seek(offset)
        done = offset
        while chunk := fin.read(chunk_bytes):
            fout.write(chunk)
            done += len(chunk)
            if progress:
                progress(done, total)


def _parse_content_range(value: str | None) -> tuple[int | None, int | None]:
    """``bytes a-b/N`` -> (a, N); ``bytes */N`` -> (None, N)."""
    m = re.match(r"bytes\s+(\d+|\*)(?:-\d+)?/(\d+|\*)", value or "")
    if not m:
        return None, None
    start = None if m.group(1) == "*" else int(m.group(1))
    total = None if m.group(2) == "*" else int(m.group(2))
    return start, total


def _fetch_http(
    session: requests.Session,
    url: str,
    part: Path,
    timeout_s: float,
    chunk_bytes: int,
    progress: Progress | None,
) -> None:
    """One HTTP attempt appending to ``part``; raises _Transient for anything worth retrying."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        resp = session.get(url, headers=headers, stream=True, timeout=timeout_s)
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise _Transient(redact_secrets(f"connection failed: {exc}")) from exc
    with resp:
        status = resp.status_code
        if status == 416 and offset:
            _, remote = _parse_content_range(resp.headers.get("Content-Range"))
            if remote == offset:
                return  # the part file already holds everything
            part.unlink()
            raise _Transient(f"range {offset}- not satisfiable (remote size {remote}); restarting")
        if status >= 500 or status in (408, 429):
            raise _Transient(f"HTTP {status} from {redact_secrets(url)}")
        if status not in (200, 206):
            raise DownloadError(f"HTTP {status} {resp.reason} for {redact_secrets(url)}")
        total: int | None
        if status == 206:
            start, total = _parse_content_range(resp.headers.get("Content-Range"))
            if start != offset:
                part.unlink(missing_ok=True)
                raise _Transient(f"server answered range from {start}, asked {offset}; restarting")
            mode = "ab"
        else:
            if offset:
                log.info("%s: server ignored the Range request; restarting from byte 0", redact_secrets(url))
            offset, mode = 0, "wb"
            total = None
        length = resp.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        if status == 200:
            total = expected
        received = 0
        try:
            with open(part, mode) as f:
                for chunk in resp.iter_content(chunk_size=chunk_bytes):
                    f.write(chunk)
                    received += len(chunk)
                    if progress:
                        progress(offset + received, total)
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
            raise _Transient(f"connection dropped after {offset + received} bytes: {exc}") from exc
        if expected is not None and received < expected:
            raise _Transient(f"truncated body: got {received} of {expected} bytes")
        if total is not None and offset + received != total:
            raise _Transient(f"incomplete file: {offset + received} of {total} bytes")


def download_archive(
    spec: ArchiveSpec,
    dest_dir: str | Path,
    *,
    retries: int = 5,
    backoff_s: float = 1.0,
    timeout_s: float = 60.0,
    chunk_bytes: int = 1 << 20,
    progress: Progress | None = None,
    session: requests.Session | None = None,
) -> Path:
    """Fetch one archive into ``dest_dir/<spec.name>``, resuming and verifying; returns the final path.

    Skips all I/O when ``<name>.done`` matches the file. A size or sha256 mismatch raises ChecksumError
    and deletes the partial file so the next attempt starts clean.
    """
    dest_dir = Path(dest_dir)
    final = dest_dir / spec.name
    part = final.with_name(final.name + ".part")
    source = source_identity(spec, timeout_s, session)
    if _is_done(spec, final, source):
        log.info("%s: already downloaded", final)
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    marker = final.with_name(final.name + ".done")
    if marker.exists():
        # Finished once but no longer matches (changed on disk, or the spec's checksum changed): refetch.
        log.warning("%s: does not match its .done marker, the spec or its source; fetching again", final)
        final.unlink(missing_ok=True)
        part.unlink(missing_ok=True)  # bytes of the old source must not be resumed from
        marker.unlink()
    elif final.exists():
        # Renamed into place but killed before the marker was written: verify by resuming from it.
        os.replace(final, part)
    if spec.size is not None and part.exists() and part.stat().st_size > spec.size:
        part.unlink()
    local = _local_source(spec.url)
    if local is not None:
        _copy_local(local, part, chunk_bytes, progress)
    else:
        own = session is None
        sess = session or requests.Session()
        try:
            for attempt in range(retries + 1):
                try:
                    _fetch_http(sess, spec.url, part, timeout_s, chunk_bytes, progress)
                    break
                except _Transient as exc:
                    if attempt == retries:
                        raise TransientDownloadError(
                            f"{spec.name}: {redact_secrets(spec.url)}: giving up after {retries + 1} "
                            f"attempt{'s' if retries else ''}: {exc}"
                        ) from exc
                    delay = backoff_s * (2**attempt)
                    log.warning("%s: %s; retry %d/%d in %.1fs", spec.name, exc, attempt + 1, retries, delay)
                    time.sleep(delay)
        finally:
            if own:
                sess.close()
    if not part.exists():
        part.touch()  # an empty remote file
    size = part.stat().st_size
    if spec.size is not None and size != spec.size:
        part.unlink()
        raise ChecksumError(final, "size", spec.size, size)
    sha = file_sha256(part)
    if spec.sha256 is not None and sha != spec.sha256:
        part.unlink()
        raise ChecksumError(final, "sha256", spec.sha256, sha)
    os.replace(part, final)
    _write_marker(final, sha, size, source)
    return final


def archive_specs(urls_file: str | None, configured: Path | None) -> list[ArchiveSpec]:
    """The archives to fetch: ``urls_file`` (a flow parameter) or else ``download.urls_file``."""
    source = urls_file or (str(configured) if configured else None)
    if source is None:
        raise ValueError(
            "no archive list: set download.urls_file (a URL manifest or a local mirror directory)"
        )
    return load_url_manifest(Path(source))


def _failure(name: str, exc: BaseException) -> str:
    msg = redact_secrets(str(exc))
    return msg if msg.startswith(name) else f"{name}: {msg}"


def fetch_and_extract(
    specs: list[ArchiveSpec], fetch: Callable[[ArchiveSpec], Path], extract: Callable[[Path], Path]
) -> tuple[list[dict[str, Any]], list[str]]:
    """Each archive on its own: ``fetch`` then ``extract`` it (the download flow passes its Prefect tasks).

    Returns a row per good archive (``archive``, ``actor_dir``, ``path``) and a ``<name>: <reason>`` line
    per bad one (a download or archive error of one archive never stops the others).
    """
    rows, failed = [], []
    for spec in specs:
        try:
            path = fetch(spec)
            actor = extract(path)
        except (OSError, ValueError) as exc:  # DownloadError, ArchiveError, ...: this archive only
            failed.append(_failure(spec.name, exc))
            log.error("%s", failed[-1])
            continue
        rows.append({"archive": spec.name, "actor_dir": str(actor), "path": path})
    return rows, failed


def check_archives(rows: list[dict[str, Any]], failed: list[str]) -> dict[str, Any]:
    """The download flow's result, or :class:`ArchivesFailed` listing every bad archive with its reason."""
    if failed:
        raise ArchivesFailed(
            f"{len(failed)} of {len(rows) + len(failed)} archives failed (the other {len(rows)} are "
            "extracted): " + "; ".join(failed)
        )
    return {
        "archives": [str(r["path"]) for r in rows],
        "actors": sorted({Path(r["actor_dir"]).name for r in rows}),
    }
