"""Per-family failure records: ``<family>.failures.json`` beside the family's store maps clip_id ->
{error, fingerprint}.

A clip that failed with the current fingerprint is skipped by reruns (the same inputs would fail again)
and reported; a later success, or a fingerprint change, clears or supersedes its record.
"""

from __future__ import annotations

import json

from emotalker.storage.zarr_store import StoreRoot

Failure = dict[str, str]  # {"error": one line, "fingerprint": the run's fingerprint}


def failures_file(family: str) -> str:
    """The records' path relative to the stores' root."""
    return f"{family}.failures.json"


def load_failures(root: StoreRoot, family: str) -> dict[str, Failure]:
    """The family's records ({} before any run recorded one)."""
    data = root.read_bytes(failures_file(family))
    return json.loads(data) if data is not None else {}


def record_failures(root: StoreRoot, family: str, updates: dict[str, Failure | None]) -> None:
    """Merge this run's outcomes (None: the clip is fine now) into the family's records under a lock.

    Re-reading inside the lock means two flows on the same stores never drop each other's records.
    """
    name = failures_file(family)
    with root.lock(name):
        failures = load_failures(root, family)
        for clip_id, entry in updates.items():
            if entry is None:
                failures.pop(clip_id, None)
            else:
                failures[clip_id] = entry
        root.write_bytes(name, json.dumps(failures, indent=1, sort_keys=True).encode())
