"""Bad inputs (issue 9): each gives a clear error naming the input, and nothing else is lost.

Tested at the level of the task functions where a whole flow adds nothing; related cases already
covered elsewhere: config key/value errors (tests/test_config.py), corrupt/silent media
(tests/data/test_media.py), bad checkpoints (tests/features/test_face_coeffs.py), generation inputs
through the flow (tests/flows/test_generate.py).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from emotalker.configs.schema import load_config
from emotalker.storage.zarr_store import FeatureStore

CONFIG = "configs/demo.yaml"


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *args], check=True)


# -------------------------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("name: demo\ntrain: {vqvae: {steps: 10\n", ["not valid YAML"]),
        ("name: demo\ntrain:\n  vqvae:\n    stepz: 10\n", ["train.vqvae.stepz", "Extra inputs"]),
        ("name: demo\ntrain:\n  vqvae:\n    steps: many\n", ["train.vqvae.steps", "integer"]),
        ("- just\n- a list\n", ["top level must be a mapping"]),
    ],
)
def test_malformed_config_is_refused_by_the_cli_naming_file_and_key(tmp_path, capsys, text, needles):
    from emotalker.flows.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    assert main(["run", "prepare", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err
    for needle in needles:
        assert needle in err
    assert list(tmp_path.iterdir()) == [bad]


def test_bad_override_type_names_the_key(capsys):
    from emotalker.flows.cli import main

    assert main(["config", "--config", CONFIG, "--set", "dask.n_workers=zero"]) == 2
    assert "dask.n_workers" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------- assets
def _extract_cfg(tmp_path: Path, assets: dict[str, Path] | None = None, **missing: bool) -> Any:
    a = assets or {}
    ckpt = a.get("checkpoint", tmp_path / "nope" / "epoch_20.pth")
    lm3d = a.get("lm3d_mat", tmp_path / "nope" / "similarity_Lm3D_all.mat")
    fa = a.get("fa_dir", tmp_path / "nope" / "checkpoints")
    if missing.get("checkpoint"):
        ckpt = tmp_path / "nope" / "epoch_20.pth"
    if missing.get("lm3d"):
        lm3d = tmp_path / "nope" / "similarity_Lm3D_all.mat"
    if missing.get("fa"):
        fa = tmp_path / "nope" / "checkpoints"
    return load_config(
        CONFIG,
        [
            "face.source=extract",
            f"face.deep3dface_checkpoint={ckpt}",
            f"face.lm3d_mat={lm3d}",
            f"face.face_alignment_dir={fa}",
            f"audio.emotion_model={tmp_path / 'nope' / 'hubert-emotion'}",
            f"audio.content_model={tmp_path / 'nope' / 'hubert-content'}",
        ],
    )


@pytest.fixture(scope="module")
def face_assets(tmp_path_factory) -> dict[str, Path]:
    from emotalker.tasks.demo.standins.fake_face_assets import write_fake_face_assets

    d = tmp_path_factory.mktemp("face-assets")
    return write_fake_face_assets(d / "deep3dface", d / "torch_home", detector_fires=False)


@pytest.mark.parametrize(
    ("which", "needles"),
    [
        ("checkpoint", ["epoch_20.pth", "Deep3DFaceRecon_pytorch", "face.deep3dface_checkpoint"]),
        ("lm3d", ["similarity_Lm3D_all.mat", "BFM", "face.lm3d_mat"]),
        ("fa", ["2DFAN4-11f355bf06.pth.tar", "https://www.adrianbulat.com", "face.face_alignment_dir"]),
    ],
)
def test_missing_face_asset_fails_before_any_work_with_where_to_get_it(tmp_path, face_assets, which, needles):
    from emotalker.tasks.features.families.face import check_face_assets

    cfg = _extract_cfg(tmp_path, face_assets, **{which: True})
    with pytest.raises(FileNotFoundError) as info:
        check_face_assets(cfg)
    for needle in needles:
        assert needle in str(info.value)
    check_face_assets(_extract_cfg(tmp_path, face_assets))  # all present: no error


def test_missing_hubert_dir_fails_before_any_work_with_where_to_get_it(tmp_path):
    from emotalker.tasks.features.families.hubert import check_audio_assets
    from emotalker.tasks.features.hubert import HubertModelNotFound

    with pytest.raises(HubertModelNotFound) as info:
        check_audio_assets(_extract_cfg(tmp_path))
    msg = str(info.value)
    assert "hubert-emotion" in msg and "audio.emotion_model" in msg and "huggingface-cli download" in msg


@pytest.mark.slow
def test_face_flow_with_missing_checkpoint_loses_nothing(reference, tmp_path):
    """Flow level: the error names the file; the store and failures file stay as they were."""
    from emotalker.flows.featurize import face_features_flow

    a = reference["root"]
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy2(a / "manifest.parquet", root / "manifest.parquet")
    shutil.copytree(a / "features" / "face.zarr", root / "features" / "face.zarr")
    ov = [
        *reference["overrides"],
        f"paths.root={root}",
        "face.source=extract",
        f"face.deep3dface_checkpoint={tmp_path}/missing/epoch_20.pth",
    ]
    before = FeatureStore(root / "features", "face").clip_ids()
    with pytest.raises(FileNotFoundError, match=r"missing/epoch_20\.pth.*Deep3DFaceRecon_pytorch"):
        face_features_flow(CONFIG, ov)
    assert FeatureStore(root / "features", "face").clip_ids() == before and len(before) == 8
    assert not (root / "features" / "face.failures.json").exists()


# ------------------------------------------------------------------------------------------- face
@pytest.mark.slow
def test_video_with_no_face_is_reported_and_other_clips_kept(tmp_path, face_assets):
    """A detector that never fires: the clip is a failure naming it, no partial group is written."""
    from emotalker.tasks.features.families import REGISTRY
    from emotalker.tasks.features.workers import compute_chunk

    video = tmp_path / "blank.mp4"
    _ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "color=c=gray:size=128x128:rate=25:duration=0.4",
        "-pix_fmt",
        "yuv420p",
        str(video),
    )
    store_root = tmp_path / "features"
    kept = FeatureStore(store_root, "face")
    kept.write_clip("W009_front_happy_level_1_001", {"motion": np.ones((5, 70), np.float32)}, fingerprint="x")
    cfg = _extract_cfg(tmp_path, face_assets)
    clip = {"clip_id": "W009_front_angry_level_1_001", "prepared_video": str(video), "n_frames": 10}
    face_cfg = cfg.face.model_dump(mode="json")
    [status] = compute_chunk([clip], REGISTRY["face"], str(store_root), face_cfg, "cpu", "fp")
    assert status["ok"] is False and "no face" in status["error"] and clip["clip_id"] in status["error"]
    assert kept.clip_ids(complete_only=False) == ["W009_front_happy_level_1_001"]
    np.testing.assert_array_equal(kept.read_clip("W009_front_happy_level_1_001")["motion"], 1.0)


# ------------------------------------------------------------------------------------------ windows
def test_clip_shorter_than_a_training_window_is_skipped_and_counted(tmp_path):
    from emotalker.storage.windows import WindowDataset

    store = FeatureStore(tmp_path, "face")
    store.write_clip("short", {"motion": np.zeros((10, 70), np.float32)})
    store.write_clip("long", {"motion": np.ones((40, 70), np.float32)})
    ds = WindowDataset({"motion": (store, "motion")}, ["short", "long"], window=16, hop=8)
    assert ds.skipped == 1 and ds.skipped_ids == ["short"]
    assert len(ds) == 4 and {ds[i]["clip_id"] for i in range(len(ds))} == {"long"}
    assert ds[0]["motion"].shape == (16, 70)


# --------------------------------------------------------------------------------------------- audio
@pytest.fixture(scope="module")
def tiny_hubert(tmp_path_factory) -> str:
    from emotalker.tasks.demo.standins.fake_hubert import write_tiny_hubert

    d = tmp_path_factory.mktemp("hubert") / "hubert"
    write_tiny_hubert(d, hidden_size=16, num_hidden_layers=2)
    return str(d)


def test_audio_shorter_than_one_hubert_frame_fails_alone(tmp_path, tiny_hubert):
    from emotalker.tasks.features.families import REGISTRY
    from emotalker.tasks.features.workers import compute_chunk

    short, good = tmp_path / "short.wav", tmp_path / "good.wav"
    sf.write(short, np.full(300, 0.1, np.float32), 16_000)  # < 400 samples: no HuBERT frame
    sf.write(good, 0.1 * np.sin(np.arange(8000) / 5.0).astype(np.float32), 16_000)
    clips = [
        {"clip_id": "M003_front_angry_level_1_001", "prepared_audio": str(short), "n_frames": 0},
        {"clip_id": "M003_front_angry_level_1_002", "prepared_audio": str(good), "n_frames": 12},
    ]
    audio_cfg = {"emotion_model": tiny_hubert, "content_model": tiny_hubert, "emotion_layer": -1}
    audio_cfg |= {"content_layer": 1, "batch_seconds": 10.0}
    out = compute_chunk(clips, REGISTRY["hubert"], str(tmp_path / "f"), audio_cfg, "cpu", "fp")
    status = {s["clip_id"]: s for s in out}
    bad = status["M003_front_angry_level_1_001"]
    assert not bad["ok"] and "shorter than one HuBERT frame" in bad["error"]
    assert "M003_front_angry_level_1_001" in bad["error"]
    assert status["M003_front_angry_level_1_002"]["ok"]
    for family in ("hubert_emotion", "hubert_content"):
        store = FeatureStore(tmp_path / "f", family)
        assert store.clip_ids(complete_only=False) == ["M003_front_angry_level_1_002"]
        assert store.shape("M003_front_angry_level_1_002", "feats")[0] == 24  # (8000 - 400) // 320 + 1


def test_mismatched_audio_video_lengths_fail_that_clip_only(tmp_path):
    from emotalker.tasks.data.prepare import prepare_chunk

    video, audio, short = tmp_path / "001.mp4", tmp_path / "001.m4a", tmp_path / "002.m4a"
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x64:rate=30:duration=1", "-pix_fmt", "yuv420p", str(video))
    _ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=1", str(audio))
    _ffmpeg("-f", "lavfi", "-i", "sine=frequency=300:sample_rate=48000:duration=0.5", str(short))
    video2 = shutil.copy2(video, tmp_path / "002.mp4")
    base = {"actor": "M003", "view": "front", "emotion": "angry", "level": 1}
    clips = [
        {
            **base,
            "clip_id": "M003_front_angry_level_1_001",
            "sentence": "001",
            "video_path": str(video),
            "audio_path": str(audio),
        },
        {
            **base,
            "clip_id": "M003_front_angry_level_1_002",
            "sentence": "002",
            "video_path": str(video2),
            "audio_path": str(short),
        },
    ]
    out = {
        u["clip_id"]: u
        for u in prepare_chunk.fn(
            clips, tmp_path / "prepared", fps=25, sample_rate=16_000, tolerance=1, workers=1
        )
    }
    ok, bad = out["M003_front_angry_level_1_001"], out["M003_front_angry_level_1_002"]
    assert ok["status"] == "prepared" and ok["n_frames"] == 25 and Path(ok["prepared_audio"]).is_file()
    assert bad["status"] == "failed" and "disagree" in bad["error"] and "002" in bad["error"]
    assert bad["prepared_video"] is None and not list((tmp_path / "prepared").rglob("*002*"))


# ------------------------------------------------------------------------------------ generation input
def test_stereo_44k_speech_is_converted_and_reported(tmp_path):
    from emotalker.tasks.generation.animate import load_speech

    path = tmp_path / "speech.wav"
    t = np.arange(44_100) / 44_100
    sf.write(
        path, np.stack([np.sin(2 * np.pi * 220 * t), 0.5 * np.sin(2 * np.pi * 330 * t)], 1) * 0.3, 44_100
    )
    wave, note = load_speech(path)
    assert wave.ndim == 1 and abs(len(wave) - 16_000) <= 16
    assert note == "converted 44100 Hz, 2 channel(s) -> 16000 Hz mono"
    mono = tmp_path / "mono.wav"
    sf.write(mono, wave, 16_000)
    assert load_speech(mono)[1] == ""  # already 16 kHz mono: nothing to report


def test_speech_shorter_than_a_frame_is_refused(tmp_path):
    from emotalker.tasks.generation.animate import InputError, load_speech

    path = tmp_path / "click.wav"
    sf.write(path, np.full(200, 0.2, np.float32), 16_000)
    with pytest.raises(InputError, match="click.wav"):
        load_speech(path)


def test_non_image_identity_is_refused_naming_the_file(tmp_path):
    from emotalker.tasks.generation.animate import InputError, read_image

    for name, data in (("notes.txt", b"not a picture\n"), ("fake.jpg", b"\xff\xd8\xff\xe0garbage" * 10)):
        p = tmp_path / name
        p.write_bytes(data)
        with pytest.raises(InputError, match=name.replace(".", r"\.")):
            read_image(p)


def test_huge_identity_image_is_refused_and_large_one_downsized(tmp_path):
    import cv2

    from emotalker.tasks.generation.animate import MAX_IMAGE_SIDE, InputError, read_image

    bomb = tmp_path / "bomb.png"
    cv2.imwrite(str(bomb), np.zeros((8200, 8200), np.uint8))  # 67 MP: a few KB on disk
    assert bomb.stat().st_size < 1_000_000
    with pytest.raises(InputError, match="bomb.png.*too large"):
        read_image(bomb)
    big = tmp_path / "big.png"
    cv2.imwrite(str(big), np.full((3000, 6000, 3), 128, np.uint8))
    img = read_image(big)
    assert img.shape == (MAX_IMAGE_SIDE // 2, MAX_IMAGE_SIDE, 3) and img.dtype == np.uint8
