"""User errors from the CLI (issue 18, cases 4, 5, 8): one line naming the input and what to do, exit 2,
tracebacks only with ``--debug``; a huge image header is refused before decoding; read-only commands
(generate) never write to the stores."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

CONFIG = "configs/demo.yaml"


def _one_line(err: str) -> str:
    """The CLI's own error line; nothing else on stderr may be a traceback."""
    assert "Traceback" not in err, err
    lines = [x for x in err.splitlines() if x.startswith("emotalker:")]
    assert len(lines) == 1, err
    return lines[0]


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width`` x ``height`` pixels, with one tiny IDAT (a decompression bomb's
    header: a few dozen bytes on disk)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.fixture
def speech(tmp_path) -> Path:
    path = tmp_path / "speech.wav"
    sf.write(path, 0.3 * np.sin(np.arange(16_000) / 5.0).astype(np.float32), 16_000)
    return path


@pytest.fixture
def face(tmp_path) -> Path:
    import cv2

    path = tmp_path / "face.png"
    cv2.imwrite(str(path), np.full((64, 64, 3), 128, np.uint8))
    return path


def test_huge_image_header_is_refused_before_decoding(tmp_path):
    """Case 5: 100000 x 100000 in the header: an InputError naming the file, no cv2.error."""
    from emotalker.tasks.generation.animate import InputError, read_image

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header(100_000, 100_000))
    with pytest.raises(InputError) as info:
        read_image(bomb)
    assert str(info.value) == (
        f"{bomb}: the image header says 100000x100000 px, too large; use an image under 64 MP"
    )


def test_yaml_error_in_override_is_one_line(capsys):
    from emotalker.flows.cli import main

    assert main(["config", "--config", CONFIG, "--set", "data.views=[front"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("emotalker: override 'data.views=[front': value is not valid YAML")
    assert "quote" in line  # what to do


def test_non_utf8_config_is_one_line(tmp_path, capsys):
    from emotalker.flows.cli import main

    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("name: d\xe9mo\n".encode("latin-1"))
    assert main(["run", "prepare", "--config", str(bad)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line == f"emotalker: {bad}: not UTF-8 text (byte 0xe9 at offset 7); save the file as UTF-8"
    assert list(tmp_path.iterdir()) == [bad]


def test_generate_errors_are_one_line_and_read_only(prefect_server, tmp_path, face, speech, capsys):
    """Case 4 + 8: every generate error is one line with exit 2 (traceback with --debug only), and
    generate against an empty root creates nothing there (no tokens store, no MLflow database)."""
    from emotalker.flows.cli import main

    root = tmp_path / "empty-root"
    root.mkdir()
    out = tmp_path / "out"
    base = ["generate", "--config", CONFIG, "--set", f"paths.root={root}", "--out", str(out)]
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header(100_000, 100_000))
    text = tmp_path / "notes.txt"
    text.write_text("not a picture\n")
    cases = [
        (["--image", str(tmp_path / "missing.png"), "--audio", str(speech)], "identity image not found"),
        (["--image", str(text), "--audio", str(speech)], f"{text} is not an image"),
        (["--image", str(bomb), "--audio", str(speech)], f"{bomb}: the image header says 100000x100000"),
        (["--image", str(face), "--audio", str(text)], f"{text}"),
        (["--image", str(face), "--audio", str(speech)], f"no tokens store at {root / 'features'}"),
    ]
    for args, needle in cases:
        assert main([*base, *args]) == 2, args
        line = _one_line(capsys.readouterr().err)
        assert needle in line, (needle, line)
    assert "audio-features" in line  # the last one says what to do
    assert list(root.iterdir()) == [] and not out.exists()

    assert main([*base, "--image", str(face), "--audio", str(speech), "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and f"no tokens store at {root / 'features'}" in err
    assert list(root.iterdir()) == []


def test_model_selection_never_creates_the_tracking_store(prefect_server, tmp_path, capsys):
    """Case 8 for the registry: with no MLflow database, choosing models fails naming it, creating none."""
    import json

    from emotalker.flows.cli import main
    from emotalker.storage.manifest import Manifest

    root = tmp_path / "root"
    root.mkdir()
    clip = "M003_front_angry_level_1_001"
    row = {"clip_id": clip, "actor": "M003", "view": "front", "emotion": "angry", "level": 1}
    Manifest(root / "manifest.parquet").upsert([{**row, "sentence": "001"}])
    split = {"train": [], "val": [], "test": [clip], "actors": {"train": [], "val": [], "test": ["M003"]}}
    (root / "split.json").write_text(json.dumps(split))
    before = sorted(p.name for p in root.iterdir())
    args = ["run", "evaluate", "--config", CONFIG, "--set", f"paths.root={root}"]
    assert main([*args, "--set", f"mlflow.tracking_uri=sqlite:///{root}/mlflow.db"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line == f"emotalker: no MLflow database at {root / 'mlflow.db'}: train the models first " + (
        "(emotalker run reproduce)"
    )
    assert sorted(p.name for p in root.iterdir()) == before
