"""Fingerprints: the short hashes reruns compare to decide what is stale (configs, prepared clips, feature
stores, registered models). They live in the bottom layer so every layer hashes the same way.

A stored fingerprint is compared with a freshly computed one, so the hashed bytes of every caller must
never change: the JSON of the payload with sorted keys, and ``str`` for values JSON cannot hold.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def digest(payload: Any, *, strict: bool = False) -> str:
    """16 hex digits of the sha256 of ``payload``'s sorted-key JSON.

    Values JSON cannot hold are written as ``str`` unless ``strict`` (then they raise ``TypeError``, as
    the prepared clips' fingerprint always has).
    """
    text = json.dumps(payload, sort_keys=True, default=None if strict else str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def fingerprint(*parts: Any) -> str:
    """The fingerprint of a feature family or a trained model: the digest of its parts as one JSON list."""
    return digest(parts)


def file_signature(path: str | Path) -> list[Any]:
    """Cheap identity of a model file or directory (names, sizes, mtimes) for staleness checks."""
    p = Path(path)
    if p.is_file():
        st = p.stat()
        return [p.name, st.st_size, st.st_mtime_ns]
    if p.is_dir():
        return [file_signature(f) for f in sorted(p.rglob("*")) if f.is_file() and not f.name.startswith(".")]
    return [str(path)]  # an HF cache id: the id is its identity
