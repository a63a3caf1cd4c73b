import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from emotalker.tasks.data import extract as ex
from emotalker.tasks.data.extract import (
    ArchiveError,
    UnsafeArchiveError,
    extract_mead_actor,
    safe_extract,
    scan_mead_tree,
)

# (emotion, level, sentence) triples of the tiny fake actor
CLIPS = [("angry", 1, "001"), ("angry", 3, "002"), ("neutral", 1, "001")]
VIEWS_IN_ARCHIVE = ("front", "left_30")


def _write_tar(path: Path, entries: dict[str, bytes | Path]) -> Path:
    """Tar of in-memory files (bytes) or of other tar files on disk (Path)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tf:
        for name, content in entries.items():
            data = content.read_bytes() if isinstance(content, Path) else content
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def _video_entries(prefix: str, clips=CLIPS, views=VIEWS_IN_ARCHIVE) -> dict[str, bytes]:
    return {
        f"{prefix}{v}/{e}/level_{lv}/{s}.mp4": f"video {v} {e} {lv} {s}".encode()
        for v in views
        for e, lv, s in clips
    }


def _audio_entries(prefix: str, clips=CLIPS) -> dict[str, bytes]:
    return {f"{prefix}{e}/level_{lv}/{s}.m4a": f"audio {e} {lv} {s}".encode() for e, lv, s in clips}


def _expected_files(actor: str, clips=CLIPS, views=VIEWS_IN_ARCHIVE) -> set[str]:
    out = {f"{actor}/video/{v}/{e}/level_{lv}/{s}.mp4" for v in views for e, lv, s in clips}
    out |= {f"{actor}/audio/{e}/level_{lv}/{s}.m4a" for e, lv, s in clips}
    return out


def _tree(raw: Path) -> set[str]:
    return {
        p.relative_to(raw).as_posix() for p in raw.rglob("*") if p.is_file() and not p.name.startswith(".")
    }


def _variant_outer_video_audio(tmp: Path) -> Path:
    video = _write_tar(tmp / "in" / "video.tar", _video_entries("video/"))
    audio = _write_tar(tmp / "in" / "audio.tar", _audio_entries("audio/"))
    return _write_tar(tmp / "M003.tar", {"video.tar": video, "audio.tar": audio})


def _variant_video_1_2(tmp: Path) -> Path:
    v1 = _write_tar(tmp / "in" / "video_1.tar", _video_entries("video/", views=("front",)))
    v2 = _write_tar(tmp / "in" / "video_2.tar", _video_entries("video/", views=("left_30",)))
    audio = _write_tar(tmp / "in" / "audio.tar", _audio_entries("audio/"))
    return _write_tar(
        tmp / "M003.tar", {"M003/video_1.tar": v1, "M003/video_2.tar": v2, "M003/audio.tar": audio}
    )


def _variant_nested_numbered(tmp: Path) -> Path:
    # inner tars start at the view level; audio carries an extra "1/" level
    v1 = _write_tar(tmp / "in" / "1.tar", _video_entries("", views=("front",)))
    v2 = _write_tar(tmp / "in" / "2.tar", _video_entries("", views=("left_30",)))
    audio = _write_tar(tmp / "in" / "audio.tar", _audio_entries("1/audio/"))
    return _write_tar(tmp / "M003.tar", {"video/1.tar": v1, "video/2.tar": v2, "audio.tar": audio})


def _variant_extra_level(tmp: Path) -> Path:
    # no inner tars; the media sits under 1/ and 2/ directory levels
    entries = {
        **_video_entries("1/video/", views=("front",)),
        **_video_entries("2/video/", views=("left_30",)),
        **_audio_entries("M003/audio/"),
        "M003/readme.txt": b"not a clip",
        "M003/._001.mp4": b"mac resource fork",
    }
    return _write_tar(tmp / "M003.tar", entries)


def _variant_bare_dir(tmp: Path) -> Path:
    _write_tar(tmp / "mirror" / "M003" / "video.tar", _video_entries("video/"))
    _write_tar(tmp / "mirror" / "M003" / "audio.tar", _audio_entries("audio/"))
    return tmp / "mirror" / "M003"


VARIANTS = {
    "outer_video_audio": _variant_outer_video_audio,
    "video_1_2": _variant_video_1_2,
    "nested_numbered": _variant_nested_numbered,
    "extra_level": _variant_extra_level,
    "bare_dir": _variant_bare_dir,
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_variant_normalises_to_one_layout(tmp_path, variant):
    archive = VARIANTS[variant](tmp_path)
    raw = tmp_path / "raw"
    out = extract_mead_actor(archive, raw)
    assert out == raw / "M003"
    assert _tree(raw) == _expected_files("M003")
    assert (raw / "M003/video/left_30/angry/level_3/002.mp4").read_bytes() == b"video left_30 angry 3 002"
    assert (raw / "M003/audio/neutral/level_1/001.m4a").read_bytes() == b"audio neutral 1 001"
    marker = json.loads((raw / "M003" / ".extracted").read_text())
    assert marker["videos"] == 6 and marker["audios"] == 3
    assert all(len(a["sha256"]) == 64 for a in marker["archives"])
    # no temp dirs left behind
    assert [p.name for p in raw.iterdir() if p.name.startswith(".tmp")] == []


def test_tar_inside_actor_dir_extracts_whole_dir_once(tmp_path, monkeypatch):
    archive_dir = _variant_bare_dir(tmp_path)
    raw = tmp_path / "raw"
    extract_mead_actor(archive_dir / "video.tar", raw)
    assert _tree(raw) == _expected_files("M003")  # audio.tar came along
    calls = []
    monkeypatch.setattr(ex, "safe_extract", lambda *a: calls.append(a))
    extract_mead_actor(archive_dir / "audio.tar", raw)
    assert calls == []


def test_extraction_is_idempotent_and_redone_when_archive_changes(tmp_path, monkeypatch):
    archive = _variant_outer_video_audio(tmp_path)
    raw = tmp_path / "raw"
    extract_mead_actor(archive, raw)
    clip = raw / "M003/video/front/angry/level_1/001.mp4"
    mtime = clip.stat().st_mtime_ns
    calls = []
    real = ex.safe_extract
    monkeypatch.setattr(ex, "safe_extract", lambda *a: calls.append(a) or real(*a))
    extract_mead_actor(archive, raw)
    assert calls == [] and clip.stat().st_mtime_ns == mtime
    # a different archive under the same name (fewer clips) replaces the tree
    video = _write_tar(tmp_path / "in2" / "video.tar", _video_entries("video/", clips=CLIPS[:1]))
    _write_tar(archive, {"video.tar": video})
    extract_mead_actor(archive, raw)
    assert calls
    assert _tree(raw) == {f"M003/video/{v}/angry/level_1/001.mp4" for v in VIEWS_IN_ARCHIVE}


def test_killed_extraction_leaves_no_complete_looking_tree(tmp_path, monkeypatch):
    archive = _variant_outer_video_audio(tmp_path)
    raw = tmp_path / "raw"

    def boom(*a):
        raise KeyboardInterrupt

    monkeypatch.setattr(ex, "_normalise", boom)
    with pytest.raises(KeyboardInterrupt):
        extract_mead_actor(archive, raw)
    assert not (raw / "M003").exists()
    monkeypatch.undo()
    # simulate a hard kill that left a temp dir behind: the next run cleans it and succeeds
    (raw / ".tmp-extract-M003-dead").mkdir()
    extract_mead_actor(archive, raw)
    assert _tree(raw) == _expected_files("M003")
    assert not (raw / ".tmp-extract-M003-dead").exists()


def test_archive_without_clips_or_actor_is_rejected(tmp_path):
    junk = _write_tar(tmp_path / "M003.tar", {"M003/notes.txt": b"x"})
    with pytest.raises(ArchiveError, match="no MEAD clips"):
        extract_mead_actor(junk, tmp_path / "raw")
    assert not (tmp_path / "raw" / "M003").exists()
    anon = _write_tar(tmp_path / "stuff" / "video.tar", _video_entries("video/"))
    with pytest.raises(ArchiveError, match="cannot tell which actor"):
        extract_mead_actor(anon, tmp_path / "raw")
    with pytest.raises(FileNotFoundError):
        extract_mead_actor(tmp_path / "nope" / "M003.tar", tmp_path / "raw")
    notatar = tmp_path / "W009.tar"
    notatar.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(ArchiveError, match="W009.tar"):
        extract_mead_actor(notatar, tmp_path / "raw")


# ------------------------------------------------------------------------------------------ unsafe


def _unsafe_tar(path: Path, bad: tarfile.TarInfo) -> Path:
    """A harmless file first, then the bad member: nothing at all may be extracted."""
    with tarfile.open(path, "w") as tf:
        ok = tarfile.TarInfo("good.txt")
        ok.size = 2
        tf.addfile(ok, io.BytesIO(b"ok"))
        if bad.isreg():
            bad.size = 4
            tf.addfile(bad, io.BytesIO(b"evil"))
        else:
            tf.addfile(bad)
    return path


def _info(name: str, type_: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    i = tarfile.TarInfo(name)
    i.type = type_
    i.linkname = link
    return i


@pytest.mark.parametrize(
    ("member", "match"),
    [
        (_info("../escape.txt"), r"'\.\./escape\.txt' contains '\.\.'"),
        (_info("a/../../escape.txt"), r"'a/\.\./\.\./escape\.txt' contains '\.\.'"),
        (_info("/etc/evil"), r"'/etc/evil' has an absolute path"),
        (
            _info("link", tarfile.SYMTYPE, "../../outside"),
            r"symlink 'link' -> '\.\./\.\./outside' points outside",
        ),
        (
            _info("link", tarfile.SYMTYPE, "/etc/passwd"),
            r"symlink 'link' points to absolute path '/etc/passwd'",
        ),
        (_info("d/link", tarfile.SYMTYPE, "../.."), r"symlink 'd/link' -> '\.\./\.\.' points outside"),
        (_info("hard", tarfile.LNKTYPE, "../outside"), r"hardlink 'hard' -> '\.\./outside' points outside"),
        (_info("hard", tarfile.LNKTYPE, "/etc/passwd"), r"hardlink 'hard' -> '/etc/passwd' points outside"),
        (_info("dev/null", tarfile.CHRTYPE), r"'dev/null' is a character device"),
        (_info("dev/sda", tarfile.BLKTYPE), r"'dev/sda' is a block device"),
        (_info("pipe", tarfile.FIFOTYPE), r"'pipe' is a FIFO"),
    ],
)
def test_unsafe_members_are_rejected_and_nothing_extracted(tmp_path, member, match):
    tar = _unsafe_tar(tmp_path / "bad.tar", member)
    dest = tmp_path / "out" / "dest"
    with pytest.raises(UnsafeArchiveError, match=match):
        safe_extract(tar, dest)
    assert not dest.exists() or list(dest.iterdir()) == []
    assert sorted(os.listdir(tmp_path)) == ["bad.tar"]  # nothing written next to dest either


def test_symlink_chain_and_write_through_link_are_rejected(tmp_path):
    chain = tmp_path / "chain.tar"
    with tarfile.open(chain, "w") as tf:
        tf.addfile(_info("l1", tarfile.SYMTYPE, "."))
        tf.addfile(_info("l2", tarfile.SYMTYPE, "l1/l1/.."))  # lexically inside, really the parent
    with pytest.raises(UnsafeArchiveError, match="'l2' .* chains through another symlink"):
        safe_extract(chain, tmp_path / "d1")
    through = tmp_path / "through.tar"
    with tarfile.open(through, "w") as tf:
        tf.addfile(_info("sub", tarfile.SYMTYPE, "."))
        f = _info("sub/file.txt")
        f.size = 1
        tf.addfile(f, io.BytesIO(b"x"))
    with pytest.raises(UnsafeArchiveError, match="'sub/file.txt' goes through the symlink member 'sub'"):
        safe_extract(through, tmp_path / "d2")
    assert not (tmp_path / "d1").exists() and not (tmp_path / "d2").exists()


def test_unsafe_member_inside_nested_tar_aborts_actor_extraction(tmp_path):
    inner = tmp_path / "in" / "video.tar"
    inner.parent.mkdir()
    _unsafe_tar(inner, _info("../../../../pwned.txt"))
    outer = _write_tar(tmp_path / "M003.tar", {"video.tar": inner, **_audio_entries("audio/")})
    raw = tmp_path / "raw"
    with pytest.raises(UnsafeArchiveError, match="pwned.txt"):
        extract_mead_actor(outer, raw)
    assert not (raw / "M003").exists()
    assert not list(tmp_path.rglob("pwned.txt"))
    assert [p for p in raw.iterdir() if p.name.startswith(".tmp")] == []


def test_safe_extract_allows_internal_links(tmp_path):
    tar = tmp_path / "ok.tar"
    with tarfile.open(tar, "w") as tf:
        f = _info("data/a.txt")
        f.size = 5
        tf.addfile(f, io.BytesIO(b"hello"))
        tf.addfile(_info("alias", tarfile.SYMTYPE, "data/a.txt"))
        tf.addfile(_info("data/hard.txt", tarfile.LNKTYPE, "data/a.txt"))
        tf.addfile(_info("data/up", tarfile.SYMTYPE, "../data/a.txt"))
    out = safe_extract(tar, tmp_path / "x")
    assert [p.relative_to(tmp_path / "x").as_posix() for p in out] == [
        "data/a.txt",
        "alias",
        "data/hard.txt",
        "data/up",
    ]
    assert (tmp_path / "x" / "alias").is_symlink() and (tmp_path / "x" / "alias").read_text() == "hello"
    assert (tmp_path / "x" / "data" / "hard.txt").read_text() == "hello"


def test_safe_extract_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.tar"):
        safe_extract(tmp_path / "missing.tar", tmp_path / "d")
    (tmp_path / "junk.tar").write_bytes(b"\x01" * 1000)
    with pytest.raises(ArchiveError, match="junk.tar"):
        safe_extract(tmp_path / "junk.tar", tmp_path / "d")


# ------------------------------------------------------------------------------------------ scan


def test_scan_mead_tree(tmp_path):
    raw = tmp_path / "raw"
    extract_mead_actor(_variant_outer_video_audio(tmp_path), raw)
    (raw / "M003/audio/angry/level_3/002.m4a").unlink()
    (raw / "notes").mkdir()  # not an actor: ignored
    clips = scan_mead_tree(raw)
    assert [(c["emotion"], c["level"], c["sentence"]) for c in clips] == CLIPS
    assert {c["view"] for c in clips} == {"front"} and {c["actor"] for c in clips} == {"M003"}
    first = clips[0]
    assert first["video_path"] == raw / "M003/video/front/angry/level_1/001.mp4"
    assert first["audio_path"] == raw / "M003/audio/angry/level_1/001.m4a"
    assert clips[1]["audio_path"] is None
    both = scan_mead_tree(raw, views=("front", "left_30", "down"))
    assert len(both) == 6
    with pytest.raises(ValueError, match="'sideways'"):
        scan_mead_tree(raw, views=("sideways",))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        scan_mead_tree(tmp_path / "nowhere")


def test_sha_taken_from_download_marker_instead_of_rehashing(tmp_path, monkeypatch):
    from emotalker.tasks.data.download import ArchiveSpec, download_archive

    src = _variant_outer_video_audio(tmp_path / "src")
    archive = download_archive(ArchiveSpec(src.as_uri(), "M003.tar"), tmp_path / "archives")
    done = json.loads((tmp_path / "archives" / "M003.tar.done").read_text())

    def no_hash(path):
        raise AssertionError(f"re-hashed {path}")

    monkeypatch.setattr(ex, "file_sha256", no_hash)
    extract_mead_actor(archive, tmp_path / "raw")
    marker = json.loads((tmp_path / "raw" / "M003" / ".extracted").read_text())
    assert marker["archives"] == [
        {"name": "M003.tar", "size": done["size"], "mtime_ns": done["mtime_ns"], "sha256": done["sha256"]}
    ]
