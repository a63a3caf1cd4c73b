"""The one lock and the one atomic write every writer uses (storage/files.py)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from emotalker.storage.files import atomic_path, file_lock, write_json_atomic, write_text_atomic


def test_atomic_path_replaces_on_success_and_keeps_the_old_file_on_error(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.json"
    write_json_atomic(target, {"v": 1})
    assert json.loads(target.read_text()) == {"v": 1}
    with pytest.raises(RuntimeError, match="killed"), atomic_path(target) as tmp:
        tmp.write_text('{"v": 2, "trunc')
        raise RuntimeError("killed mid-write")
    assert json.loads(target.read_text()) == {"v": 1}
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.json"]  # no temp file left


def test_atomic_path_suffix_ends_the_temp_name(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "a.wav", suffix=".tmp.wav", fsync=True) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".a.wav.") and tmp.name.endswith(".tmp.wav")
        assert not tmp.exists()  # created by the writer, so it gets the writer's permissions
        tmp.write_bytes(b"x")
    assert (tmp_path / "a.wav").read_bytes() == b"x"
    assert write_text_atomic(tmp_path / "t.txt", "hi").read_text() == "hi"


def test_file_lock_excludes_other_holders(tmp_path: Path) -> None:
    """Read-modify-write of a counter under the lock from several threads loses no increment."""
    lock, counter = tmp_path / "locks" / "c.lock", tmp_path / "c.txt"
    counter.write_text("0")

    def bump() -> None:
        for _ in range(20):
            with file_lock(lock):
                n = int(counter.read_text())
                time.sleep(0.0005)  # widen the race window the lock must close
                counter.write_text(str(n + 1))

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counter.read_text() == "80"
    assert lock.exists()
