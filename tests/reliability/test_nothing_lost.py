"""Issue 30, "nothing lost, nothing hidden": one failure is reported once, where it is, with its cause, and
costs neither the other clips nor a rerun's chance to repair it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

CONFIG = "configs/demo.yaml"


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *args], check=True)


def _clip(raw: Path, sentence: str | bytes, actor: str = "M003", emotion: str = "angry") -> None:
    """A MEAD-layout clip (0.4 s of 30 fps video, 48 kHz sine audio); ``sentence`` may be raw bytes."""
    vdir = raw / actor / "video" / "front" / emotion / "level_1"
    adir = raw / actor / "audio" / emotion / "level_1"
    vdir.mkdir(parents=True, exist_ok=True)
    adir.mkdir(parents=True, exist_ok=True)
    tmp_v, tmp_a = raw / "v.mp4", raw / "a.m4a"
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x64:rate=30:duration=0.4", "-pix_fmt", "yuv420p", str(tmp_v))
    _ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=0.4", str(tmp_a))
    stem = sentence if isinstance(sentence, bytes) else sentence.encode()
    os.rename(tmp_v, os.path.join(os.fsencode(vdir), stem + b".mp4"))
    os.rename(tmp_a, os.path.join(os.fsencode(adir), stem + b".m4a"))


def test_non_utf8_file_name_fails_that_clip_only(tmp_path):
    """Case 3: ``016\\xff.mp4`` is recorded failed under its escaped name; the other clip is prepared and
    the manifest is written."""
    from emotalker.storage.manifest import Manifest
    from emotalker.tasks.data.prepare import mead_clips, prepare_chunk, register_clips

    raw, prepared = tmp_path / "raw", tmp_path / "prepared"
    _clip(raw, "015")
    _clip(raw, b"016\xff")
    manifest = Manifest(tmp_path / "manifest.parquet")
    clips = mead_clips(raw, ["front"])
    new, todo = register_clips(manifest, clips, 25, 16_000, 1)
    assert [c["clip_id"] for c in todo] == ["M003_front_angry_level_1_015"]
    manifest.upsert(prepare_chunk.fn(todo, prepared, fps=25, sample_rate=16_000, tolerance=1, workers=1))
    rows = {r["clip_id"]: r for r in Manifest(manifest.path).records()}
    bad = rows["M003_front_angry_level_1_016\\xff"]
    assert bad["status"] == "failed"
    assert "016\\xff.mp4: file name is not valid UTF-8" in bad["error"]
    assert rows["M003_front_angry_level_1_015"]["status"] == "prepared"
    # a rerun does not try the bad clip again and keeps its reason
    _, todo2 = register_clips(manifest, mead_clips(raw, ["front"]), 25, 16_000, 1)
    assert todo2 == []
    assert Manifest(manifest.path).get("M003_front_angry_level_1_016\\xff")["status"] == "failed"


def _full_disk_ffmpeg(tmp_path: Path, monkeypatch, marker: str) -> None:
    """An ``ffmpeg`` on PATH that behaves as ffmpeg does on a full disk for outputs of sources named
    ``marker``: the output is cut short, stderr says "No space left on device", the exit code is 0."""
    import shutil

    real = shutil.which("ffmpeg")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "ffmpeg"
    fake.write_text(
        "#!/bin/bash\n"
        f'"{real}" "$@"; rc=$?\n'
        'for a; do out="$a"; done\n'
        f'case "$*" in *{marker}*) truncate -s 100 "$out"; '
        'echo "Error writing trailer of $out: No space left on device" >&2;; esac\n'
        "exit $rc\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")


def test_disk_full_is_said_once_and_marks_no_clip_failed(tmp_path, monkeypatch):
    """Case 1: ffmpeg exits 0 on ENOSPC; prepare stops with one "no space left on <mount>" error, the clip
    it hit keeps its ``raw`` row (no wrong reason), and a rerun with space prepares it."""
    import pytest

    from emotalker.storage.manifest import Manifest
    from emotalker.tasks.data import prepare
    from emotalker.tasks.data.resample import NoSpaceLeft

    monkeypatch.setattr(prepare, "prepare_chunk", prepare.prepare_chunk.fn)
    raw, out = tmp_path / "raw", tmp_path / "prepared"
    for s in ("015", "016", "017"):
        _clip(raw, s)
    manifest = Manifest(tmp_path / "manifest.parquet")
    _, todo = prepare.register_clips(manifest, prepare.mead_clips(raw, ["front"]), 25, 16_000, 1)
    with monkeypatch.context() as m:
        _full_disk_ffmpeg(tmp_path, m, "016")
        with pytest.raises(NoSpaceLeft) as err:
            prepare.prepare_clips(manifest, todo, out, fps=25, sample_rate=16_000, tolerance=1, workers=1)
    msg = str(err.value)
    assert msg.startswith("no space left on /") and "M003_front_angry_level_1_016.mp4" in msg
    assert "\n" not in msg and msg.count("no space left") == 1
    rows = {r["clip_id"][-3:]: r for r in Manifest(manifest.path).records()}
    assert {k: r["status"] for k, r in rows.items()} == {"015": "prepared", "016": "raw", "017": "prepared"}
    assert rows["016"]["error"] is None
    assert not list(out.rglob("*016*"))
    _, todo = prepare.register_clips(manifest, prepare.mead_clips(raw, ["front"]), 25, 16_000, 1)
    assert [c["clip_id"][-3:] for c in todo] == ["016"]
    prepare.prepare_clips(manifest, todo, out, fps=25, sample_rate=16_000, tolerance=1, workers=1)
    assert Manifest(manifest.path).get("M003_front_angry_level_1_016")["status"] == "prepared"


def test_no_space_error_survives_pickling(tmp_path):
    """Prefect keeps a failed flow's exception: the one-line message must come back the same."""
    import pickle

    from emotalker.tasks.data.resample import NoSpaceLeft

    err = NoSpaceLeft(tmp_path / "x.mp4", "; 2 clip(s) not prepared")
    back = pickle.loads(pickle.dumps(err))
    assert str(back) == str(err) and back.errno == 28


def _actor_tar(path: Path, tag: bytes) -> None:
    """``M020.tar``: one clip whose video and audio bytes end with ``tag`` (same size for any 1-byte tag)."""
    import io
    import tarfile

    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tf:
        for name in ("video/front/angry/level_1/001.mp4", "audio/angry/level_1/001.m4a"):
            info = tarfile.TarInfo(name)
            info.size = 8
            tf.addfile(info, io.BytesIO(b"content" + tag))


def test_changed_archive_in_the_mirror_is_fetched_and_extracted_again(tmp_path):
    """Case 2: replacing ``M020.tar`` by different bytes of the same size (a newer mtime) refetches and
    re-extracts it; an unchanged mirror stays a no-op."""
    from emotalker.tasks.data.download import archive_specs, download_archive
    from emotalker.tasks.data.extract import extract_mead_actor

    mirror, archives, raw = tmp_path / "mirror", tmp_path / "archives", tmp_path / "raw"
    _actor_tar(mirror / "M020.tar", b"1")

    def run() -> Path:
        (spec,) = archive_specs(str(mirror), None)
        return extract_mead_actor(download_archive(spec, archives), raw)

    clip = run() / "video" / "front" / "angry" / "level_1" / "001.mp4"
    assert clip.read_bytes() == b"content1"
    before = (archives / "M020.tar").stat().st_mtime_ns
    run()
    assert (archives / "M020.tar").stat().st_mtime_ns == before  # unchanged source: not fetched again
    size = (mirror / "M020.tar").stat().st_size
    _actor_tar(mirror / "M020.tar", b"2")
    os.utime(mirror / "M020.tar", ns=(before + 10**9, before + 10**9))
    assert (mirror / "M020.tar").stat().st_size == size
    run()
    assert clip.read_bytes() == b"content2"
    assert (archives / "M020.tar").read_bytes() == (mirror / "M020.tar").read_bytes()


def test_a_manifest_that_cannot_be_written_for_lack_of_space_names_it(tmp_path, monkeypatch):
    """Case 1, no space at all: pyarrow's "[Errno 28] Error writing bytes to file" names no file; prepare
    says which file system and which file, once."""
    import pytest

    from emotalker.storage.manifest import Manifest
    from emotalker.tasks.data import prepare
    from emotalker.tasks.data.resample import NoSpaceLeft

    monkeypatch.setattr(prepare, "prepare_chunk", prepare.prepare_chunk.fn)
    raw = tmp_path / "raw"
    _clip(raw, "015")
    manifest = Manifest(tmp_path / "manifest.parquet")
    _, todo = prepare.register_clips(manifest, prepare.mead_clips(raw, ["front"]), 25, 16_000, 1)

    def full(rows):
        raise OSError("[Errno 28] Error writing bytes to file")

    monkeypatch.setattr(manifest, "upsert", full)
    with pytest.raises(NoSpaceLeft) as err:
        prepare.prepare_clips(
            manifest, todo, tmp_path / "out", fps=25, sample_rate=16_000, tolerance=1, workers=1
        )
    assert str(err.value).startswith("no space left on /") and str(manifest.path) in str(err.value)
    assert "the manifest was not updated" in str(err.value)


def test_a_real_full_file_system_under_ffmpeg(tmp_path, monkeypatch):
    """Case 1 with the real ffmpeg on a real full file system (a 16 KiB tmpfs; skipped where this process
    may not mount one): the first clip fills it, prepare says "no space left on <the tmpfs>" once and
    marks nothing failed."""
    import pytest

    from emotalker.storage.manifest import Manifest
    from emotalker.tasks.data import prepare
    from emotalker.tasks.data.resample import NoSpaceLeft

    tiny = tmp_path / "tiny"
    tiny.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(tiny)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        monkeypatch.setattr(prepare, "prepare_chunk", prepare.prepare_chunk.fn)
        raw = tmp_path / "raw"
        for s in ("015", "016"):
            _clip(raw, s)
        manifest = Manifest(tmp_path / "manifest.parquet")
        _, todo = prepare.register_clips(manifest, prepare.mead_clips(raw, ["front"]), 25, 16_000, 1)
        (tiny / "filler").write_bytes(b"\0" * 8192)
        with pytest.raises(NoSpaceLeft) as err:
            prepare.prepare_clips(manifest, todo, tiny, fps=25, sample_rate=16_000, tolerance=1, workers=1)
        assert str(err.value).startswith(f"no space left on {tiny} (writing {tiny}/")
        assert {r["status"] for r in Manifest(manifest.path).records()} <= {"raw", "prepared"}
        assert all(r["error"] is None for r in Manifest(manifest.path).records())
    finally:
        subprocess.run(["umount", str(tiny)], check=False)
