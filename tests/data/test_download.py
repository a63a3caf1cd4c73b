import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from emotalker.tasks.data.download import (
    ArchiveSpec,
    ChecksumError,
    DownloadError,
    ManifestError,
    download_archive,
    load_url_manifest,
)
from emotalker_testkit.http_server import Behaviour, serve

FAST = {"retries": 3, "backoff_s": 0.0, "timeout_s": 5.0, "chunk_bytes": 4096}


def _tar_bytes(n_files: int, size: int, seed: int) -> bytes:
    """A real tar with pseudo-random payloads (incompressible, distinct per seed)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for i in range(n_files):
            payload = hashlib.sha256(f"{seed}-{i}".encode()).digest() * (size // 32)
            info = tarfile.TarInfo(f"M003/video/front/angry/level_1/{i:03d}.mp4")
            info.size = len(payload)
            tf.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


@pytest.fixture(scope="module")
def files() -> dict[str, bytes]:
    return {"M003.tar": _tar_bytes(3, 40_000, 1), "W009.tar": _tar_bytes(2, 30_000, 2)}


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _spec(srv, name: str, data: bytes | None = None, **kw) -> ArchiveSpec:
    if data is not None:
        kw.setdefault("sha256", _sha(data))
        kw.setdefault("size", len(data))
    return ArchiveSpec(url=srv.url(name), name=name, **kw)


def test_plain_download_writes_file_and_marker(files, tmp_path):
    seen: list[tuple[int, int | None]] = []
    with serve(files) as srv:
        out = download_archive(
            _spec(srv, "M003.tar", files["M003.tar"]),
            tmp_path,
            progress=lambda d, t: seen.append((d, t)),
            **FAST,
        )
    assert out == tmp_path / "M003.tar"
    assert out.read_bytes() == files["M003.tar"]
    assert not (tmp_path / "M003.tar.part").exists()
    marker = json.loads((tmp_path / "M003.tar.done").read_text())
    assert marker["sha256"] == _sha(files["M003.tar"]) and marker["size"] == len(files["M003.tar"])
    assert seen[-1] == (len(files["M003.tar"]), len(files["M003.tar"]))
    with tarfile.open(out) as tf:
        assert len(tf.getmembers()) == 3


def test_resume_after_dropped_connection_uses_range(files, tmp_path):
    data = files["M003.tar"]
    beh = Behaviour(drop_after={"M003.tar": [10_000, 25_000]})
    with serve(files, beh) as srv:
        out = download_archive(_spec(srv, "M003.tar", data), tmp_path, **FAST)
        ranges = [r for p, r in srv.requests if p == "M003.tar"]
    assert out.read_bytes() == data
    assert ranges[0] is None and len(ranges) == 3
    # each retry continues from what the previous attempt wrote (the client may lose its last partial chunk)
    starts = [int(r.removeprefix("bytes=").removesuffix("-")) for r in ranges[1:]]
    assert 10_000 - FAST["chunk_bytes"] <= starts[0] <= 10_000
    assert starts[0] + 25_000 - FAST["chunk_bytes"] <= starts[1] <= starts[0] + 25_000


def test_resume_without_spec_checksums_compares_content_length(files, tmp_path):
    data = files["W009.tar"]
    beh = Behaviour(drop_after={"W009.tar": [5_000]})
    with serve(files, beh) as srv:
        out = download_archive(ArchiveSpec(srv.url("W009.tar"), "W009.tar"), tmp_path, **FAST)
        assert srv.count("W009.tar") == 2
    assert out.read_bytes() == data


def test_server_ignoring_range_restarts_from_zero(files, tmp_path):
    data = files["M003.tar"]
    beh = Behaviour(ignore_range={"M003.tar"}, drop_after={"M003.tar": [12_345]})
    with serve(files, beh) as srv:
        out = download_archive(_spec(srv, "M003.tar", data), tmp_path, **FAST)
        ranges = [r for p, r in srv.requests if p == "M003.tar"]
    assert ranges[0] is None and ranges[1].startswith("bytes=") and ranges[1] != "bytes=0-"
    assert len(ranges) == 2
    assert out.read_bytes() == data  # not the prefix twice


def test_stale_part_file_is_resumed(files, tmp_path):
    data = files["M003.tar"]
    (tmp_path / "M003.tar.part").write_bytes(data[:7000])
    with serve(files) as srv:
        out = download_archive(_spec(srv, "M003.tar", data), tmp_path, **FAST)
        assert srv.requests == [("M003.tar", "bytes=7000-")]
    assert out.read_bytes() == data


def test_checksum_mismatch_raises_and_leaves_nothing(files, tmp_path):
    data = files["M003.tar"]
    with serve(files) as srv:
        spec = _spec(srv, "M003.tar", data, sha256="0" * 64)
        with pytest.raises(ChecksumError) as err:
            download_archive(spec, tmp_path, **FAST)
    msg = str(err.value)
    assert "M003.tar" in msg and "0" * 64 in msg and _sha(data) in msg
    assert sorted(os.listdir(tmp_path)) == []


def test_size_mismatch_raises(files, tmp_path):
    data = files["W009.tar"]
    with serve(files) as srv:
        with pytest.raises(ChecksumError, match="size mismatch: expected 123, got"):
            download_archive(_spec(srv, "W009.tar", data, size=123, sha256=None), tmp_path, **FAST)
    assert not (tmp_path / "W009.tar").exists() and not (tmp_path / "W009.tar.part").exists()


def test_rerun_is_noop_without_network(files, tmp_path):
    data = files["M003.tar"]
    with serve(files) as srv:
        spec = _spec(srv, "M003.tar", data)
        first = download_archive(spec, tmp_path, **FAST)
        mtime = first.stat().st_mtime_ns
        second = download_archive(spec, tmp_path, **FAST)
        assert srv.count("M003.tar") == 1
    assert second == first and first.stat().st_mtime_ns == mtime
    # after the server is gone a rerun still succeeds: it never touches the network
    assert download_archive(spec, tmp_path, **FAST) == first


def test_corrupted_final_file_is_fetched_again(files, tmp_path):
    data = files["W009.tar"]
    with serve(files) as srv:
        spec = _spec(srv, "W009.tar", data)
        out = download_archive(spec, tmp_path, **FAST)
        out.write_bytes(b"x" * len(data))  # same size, new mtime, wrong content
        download_archive(spec, tmp_path, **FAST)
        assert srv.count("W009.tar") >= 2
    assert out.read_bytes() == data


def test_retries_exhausted_and_http_errors(files, tmp_path):
    beh = Behaviour(drop_after={"M003.tar": [100] * 10}, status={"W009.tar": 404})
    with serve(files, beh) as srv:
        with pytest.raises(DownloadError, match="giving up after 3 attempts"):
            download_archive(_spec(srv, "M003.tar"), tmp_path, **{**FAST, "retries": 2})
        with pytest.raises(DownloadError, match="HTTP 404"):
            download_archive(_spec(srv, "W009.tar"), tmp_path, **FAST)
        assert srv.count("W009.tar") == 1  # a 404 is not retried
    assert not (tmp_path / "M003.tar").exists()


def test_file_url_and_plain_path(files, tmp_path):
    src = tmp_path / "src" / "M003.tar"
    src.parent.mkdir()
    src.write_bytes(files["M003.tar"])
    out = download_archive(ArchiveSpec(src.as_uri(), "M003.tar"), tmp_path / "a", **FAST)
    assert out.read_bytes() == files["M003.tar"]
    # resumable copy: a partial .part is continued, not restarted
    dest = tmp_path / "b"
    dest.mkdir()
    (dest / "M003.tar.part").write_bytes(files["M003.tar"][:5000])
    calls: list[int] = []
    out2 = download_archive(
        ArchiveSpec(str(src), "M003.tar", sha256=_sha(files["M003.tar"])),
        dest,
        progress=lambda d, t: calls.append(d),
        **FAST,
    )
    assert out2.read_bytes() == files["M003.tar"]
    assert calls[0] > 5000 and calls[0] - 5000 <= FAST["chunk_bytes"]
    with pytest.raises(FileNotFoundError, match="missing.tar"):
        download_archive(ArchiveSpec((tmp_path / "missing.tar").as_uri(), "missing.tar"), dest, **FAST)


def test_local_mirror_directory(files, tmp_path):
    mirror = tmp_path / "mirror"
    (mirror / "W015").mkdir(parents=True)
    (mirror / "M003.tar").write_bytes(files["M003.tar"])
    (mirror / "W015" / "video.tar").write_bytes(files["W009.tar"])
    (mirror / "notes.txt").write_text("ignored")
    specs = load_url_manifest(mirror)
    assert [s.name for s in specs] == ["M003.tar", "W015/video.tar"]
    assert all(s.url.startswith("file://") for s in specs)
    outs = [download_archive(s, tmp_path / "archives", **FAST) for s in specs]
    assert outs[1] == tmp_path / "archives" / "W015" / "video.tar"
    assert outs[1].read_bytes() == files["W009.tar"]
    with pytest.raises(ManifestError, match="no .* archives"):
        load_url_manifest(_empty_dir(tmp_path))


def _empty_dir(tmp_path: Path) -> Path:
    d = tmp_path / "empty"
    d.mkdir()
    return d


def test_manifest_formats(tmp_path):
    sha = "ab" * 32
    (tmp_path / "m.json").write_text(
        json.dumps(
            [
                "https://example.org/data/M003.tar",
                {"url": "https://example.org/x?id=1", "name": "W009.tar", "sha256": sha.upper(), "size": 10},
            ]
        )
    )
    specs = load_url_manifest(tmp_path / "m.json")
    assert specs == [
        ArchiveSpec("https://example.org/data/M003.tar", "M003.tar"),
        ArchiveSpec("https://example.org/x?id=1", "W009.tar", sha, 10),
    ]
    (tmp_path / "m.yaml").write_text("archives:\n  - url: local/M030.tar\n    size: 5\n")
    (yspec,) = load_url_manifest(tmp_path / "m.yaml")
    assert yspec.url == (tmp_path / "local" / "M030.tar").resolve().as_uri() and yspec.name == "M030.tar"
    (tmp_path / "m.txt").write_text(
        f"# MEAD\nhttps://example.org/M003.tar {sha} 42\n\nfile:///srv/mead/W015.tar name=w15.tar  # c\n"
    )
    t = load_url_manifest(tmp_path / "m.txt")
    assert t[0] == ArchiveSpec("https://example.org/M003.tar", "M003.tar", sha, 42)
    assert t[1] == ArchiveSpec("file:///srv/mead/W015.tar", "w15.tar")


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ('[{"url": "https://e.org/a.tar", "sha256": "xyz"}]', "sha256 'xyz' must be 64 hex"),
        ('[{"url": "https://e.org/a.tar", "size": -1}]', "size -1"),
        ('[{"url": "https://e.org/a.tar", "nmae": "b"}]', "unknown keys \\['nmae'\\]"),
        ('[{"url": "https://e.org/a.tar", "name": "../evil.tar"}]', "may not contain"),
        ('[{"url": "https://e.org/a.tar", "name": "/abs.tar"}]', "relative file name"),
        ('["https://e.org/a.tar", "https://f.org/a.tar"]', "entry 1: name 'a.tar' already used"),
        ('[{"url": "ftp://e.org/a.tar"}]', "unsupported URL scheme 'ftp'"),
        ('[{"name": "a.tar"}]', "'url' is required"),
        ("[]", "lists no archives"),
        ("{not json", "not valid JSON"),
        ('{"files": []}', "'archives' list"),
    ],
)
def test_manifest_errors_name_the_file(tmp_path, content, match):
    p = tmp_path / "urls.json"
    p.write_text(content)
    with pytest.raises(ManifestError, match=match) as err:
        load_url_manifest(p)
    assert "urls.json" in str(err.value)


def test_manifest_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_url_manifest(tmp_path / "nope.yaml")


def test_file_without_marker_is_verified_by_resuming(files, tmp_path):
    """Killed between the rename and the marker: the rerun asks only for bytes past the end (416)."""
    data = files["W009.tar"]
    with serve(files) as srv:
        spec = ArchiveSpec(srv.url("W009.tar"), "W009.tar")
        out = download_archive(spec, tmp_path, **FAST)
        (tmp_path / "W009.tar.done").unlink()
        download_archive(spec, tmp_path, **FAST)
        assert srv.requests[-1] == ("W009.tar", f"bytes={len(data)}-")
    assert out.read_bytes() == data and (tmp_path / "W009.tar.done").exists()
