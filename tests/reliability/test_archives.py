"""Hostile archives (issue 18, cases 1, 2, 6, 10): each archive is handled on its own, errors name the
user's archive and member (never a temp dir), actor ids are ASCII, transient failures are task retries."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from emotalker_testkit.http_server import Behaviour, serve

CONFIG = "configs/demo.yaml"
GOOD_MEMBER = "M003/video/front/angry/level_1/001.mp4"


def _tar(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _flow_overrides(root: Path, mirror: Path, *extra: str) -> list[str]:
    return [f"paths.root={root}", f"download.urls_file={mirror}", "download.backoff_s=0", *extra]


def test_bad_archives_fail_after_every_good_one_is_extracted(prefect_server, tmp_path):
    """Case 1, 2, 6: good archives on both sides of the bad ones are extracted, then one error lists each
    bad archive with the user's names (archive, nested tar, member), never a temp path."""
    from emotalker.flows.ingest import download_flow
    from emotalker.tasks.data.download import ArchivesFailed

    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "M003.tar").write_bytes(_tar({GOOD_MEMBER: b"good-m003"}))
    nested = _tar({"../../escape.mp4": b"pwned"})
    (mirror / "M901.tar").write_bytes(_tar({"video.tar": nested}))
    (mirror / "M\u0660\u0661\u0662.tar").write_bytes(_tar({GOOD_MEMBER.replace("M003", "M012"): b"x"}))
    (mirror / "bonus.tar").write_bytes(_tar({GOOD_MEMBER: b"x"}))
    (mirror / "W009.tar").write_bytes(_tar({GOOD_MEMBER.replace("M003", "W009"): b"good-w009"}))
    root = tmp_path / "root"
    with pytest.raises(ArchivesFailed) as info:
        download_flow(CONFIG, _flow_overrides(root, mirror))
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith("3 of 5 archives failed (the other 2 are extracted): ")
    assert "M901.tar: video.tar: member '../../escape.mp4' contains '..'" in msg
    assert "M\u0660\u0661\u0662.tar: cannot tell which actor it holds" in msg
    assert "bonus.tar: cannot tell which actor it holds" in msg
    assert ".tmp-extract" not in msg and str(tmp_path) not in msg and "stage" not in msg
    raw = root / "raw"
    assert (raw / "M003/video/front/angry/level_1/001.mp4").read_bytes() == b"good-m003"
    assert (raw / "W009/video/front/angry/level_1/001.mp4").read_bytes() == b"good-w009"
    assert sorted(p.name for p in raw.iterdir() if not p.name.startswith(".")) == ["M003", "W009"]
    assert not list(tmp_path.rglob("escape.mp4"))
    assert not list(raw.glob(".tmp-extract-*"))
    written = [p for p in tmp_path.rglob("*") if p.is_file() and mirror not in p.parents]
    assert written and all(root in p.parents for p in written)  # nothing outside paths.root


def test_actor_ids_are_ascii_only(tmp_path):
    """Case 6 at the scan too: a directory named with Arabic-Indic digits is no actor."""
    from emotalker.tasks.data.extract import ACTOR_RE, scan_mead_tree

    assert ACTOR_RE.match("M012") and not ACTOR_RE.match("M\u0660\u0661\u0662")
    assert not ACTOR_RE.match("W\uff10\uff11\uff12")  # full-width digits
    for actor in ("M\u0660\u0661\u0662", "W009"):
        clip = tmp_path / actor / "video/front/angry/level_1/001.mp4"
        clip.parent.mkdir(parents=True)
        clip.write_bytes(b"x")
    assert [c["actor"] for c in scan_mead_tree(tmp_path)] == ["W009"]


def test_unsafe_member_in_a_directory_unit_names_the_archive_path(tmp_path):
    """Case 2 for an actor directory of tars: ``W009/video.tar: 1.tar: member ...``."""
    from emotalker.tasks.data.extract import UnsafeArchiveError, extract_mead_actor

    unit = tmp_path / "archives" / "W009"
    unit.mkdir(parents=True)
    (unit / "video.tar").write_bytes(_tar({"1.tar": _tar({"/etc/passwd.mp4": b"x"})}))
    with pytest.raises(UnsafeArchiveError) as info:
        extract_mead_actor(unit / "video.tar", tmp_path / "raw")
    assert str(info.value) == "W009/video.tar: 1.tar: member '/etc/passwd.mp4' has an absolute path"


def test_transient_download_failures_are_prefect_task_retries(prefect_server, tmp_path):
    """Case 10: each dropped connection is one failed task run attempt (AwaitingRetry in the UI), the next
    attempt resumes from the ``.part`` file with a Range request; a 404 is not retried."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from emotalker.flows.ingest import download_flow
    from emotalker.tasks.data.download import ArchivesFailed

    data = _tar({GOOD_MEMBER: bytes(range(256)) * 400})
    files = {"M003.tar": data, "W009.tar": data}
    manifest = tmp_path / "urls.txt"
    beh = Behaviour(drop_after={"M003.tar": [30_000, 60_000]}, status={"W009.tar": 404})
    root = tmp_path / "root"
    with serve(files, beh) as srv:
        manifest.write_text(f"{srv.url('M003.tar')} size={len(data)}\n{srv.url('W009.tar')}\n")
        state = download_flow(
            CONFIG,
            _flow_overrides(root, manifest, "download.retries=3", "download.chunk_bytes=4096"),
            return_state=True,
        )
        ranges = [r for p, r in srv.requests if p == "M003.tar"]
        w009_requests = srv.count("W009.tar")
    assert state.is_failed()
    with pytest.raises(ArchivesFailed, match=r"^1 of 2 archives failed .*W009\.tar: HTTP 404"):
        state.result()
    assert (root / "archives" / "M003.tar").read_bytes() == data
    assert (root / "raw" / "M003" / "video/front/angry/level_1/001.mp4").is_file()
    assert ranges[0] is None and len(ranges) == 3 and all(r and r.startswith("bytes=") for r in ranges[1:])
    assert w009_requests == 1
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
        )
        by_name = {r.name: r for r in runs}
        m003 = by_name["download-M003.tar"]
        history = [s.name for s in client.read_task_run_states(m003.id)]
    assert m003.run_count == 3 and history.count("AwaitingRetry") == 2 and history[-1] == "Completed"
    assert by_name["download-W009.tar"].run_count == 1 and by_name["download-W009.tar"].state.is_failed()
