"""Local file safety: one exclusive lock and one atomic write-then-replace, used by every writer.

Readers must never see half a file (a kill mid-write keeps the previous version), and two writers of
one file (two flows on the same root, or two Dask workers) must take turns instead of losing updates.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def file_lock(path: str | Path, shared: bool = False) -> Iterator[None]:
    """Hold an exclusive (or, with ``shared``, a shared) ``flock`` on ``path`` (created if missing).

    The lock belongs to the open file description, so it excludes other threads as well as other
    processes; it is released when the block ends or the process dies (no stale lock files to clean).
    Shared holders (readers) exclude only exclusive ones (writers).
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


@contextmanager
def atomic_path(path: str | Path, *, suffix: str = ".tmp", fsync: bool = False) -> Iterator[Path]:
    """Yield a fresh temp path beside ``path``; a clean exit renames it over ``path`` in one step.

    On an exception the temp file is removed and ``path`` keeps its previous content. ``suffix`` ends
    the temp name (tools that pick a format by extension get one); ``fsync`` flushes the data to disk
    before the rename, for files whose loss after a power cut would lose records.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}-{secrets.token_hex(4)}{suffix}")
    try:
        yield tmp
        if fsync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through :func:`atomic_path`."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json_atomic(path: str | Path, obj: Any, **dumps: Any) -> Path:
    """``json.dumps(obj, **dumps)`` written to ``path`` through :func:`atomic_path`."""
    return write_text_atomic(path, json.dumps(obj, **dumps))
