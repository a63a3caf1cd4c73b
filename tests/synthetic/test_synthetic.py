"""The synthetic MEAD-shaped generator: archive shape, media formats, speech, learnable ground truth."""

from __future__ import annotations

import io
import tarfile
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter1d

from emotalker.configs.constants import EMOTIONS, FACE_INDICES, LIP_INDICES, MEAD_AUDIO_RATE, MOTION_DIM
from emotalker.tasks.demo.synthetic.face import EMOTION_FACE, identity_for_actor, render_frame
from emotalker.tasks.demo.synthetic.mead import FIXED_MTIME, generate_mead
from emotalker.tasks.demo.synthetic.speech import (
    SENTENCES,
    TILT_SPLIT_HZ,
    prosody_for,
    speech_envelope,
    synthesize,
    voice_for_actor,
    voice_quality,
)
from emotalker.tasks.features.ground_truth import (
    GroundTruthError,
    ground_truth_path,
    load_ground_truth,
    read_ground_truth,
)

SIZE = 256
EXPECTED = ["angry/level_1", "angry/level_3", "happy/level_1", "happy/level_3", "neutral/level_1"]


def _inner(outer: Path) -> dict[str, tarfile.TarFile]:
    """Inner tars of an outer actor archive, opened in memory."""
    out = {}
    with tarfile.open(outer) as tf:
        for m in tf.getmembers():
            data = tf.extractfile(m).read()  # type: ignore[union-attr]
            out[m.name] = tarfile.open(fileobj=io.BytesIO(data))
    return out


def _member_bytes(tf: tarfile.TarFile, name: str) -> bytes:
    return tf.extractfile(name).read()  # type: ignore[union-attr]


def _decode_video(data: bytes) -> tuple[np.ndarray, float, str, str]:
    with av.open(io.BytesIO(data)) as c:
        s = c.streams.video[0]
        frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
        return frames, float(s.average_rate), s.codec_context.name, s.codec_context.pix_fmt


def _decode_audio(data: bytes) -> tuple[np.ndarray, int, str]:
    with av.open(io.BytesIO(data)) as c:
        s = c.streams.audio[0]
        samples = np.concatenate([f.to_ndarray().mean(axis=0) for f in c.decode(audio=0)])
        return samples, s.rate, s.codec_context.name


def _rms_envelope(x: np.ndarray, n: int, hop: int = MEAD_AUDIO_RATE // 30) -> np.ndarray:
    """Independent re-computation of a per-frame loudness (dB of windowed RMS, smoothed)."""
    x = np.pad(x[: n * hop], (0, max(0, n * hop - len(x))))
    rms = np.sqrt(np.mean(x.reshape(n, hop).astype(np.float64) ** 2, axis=1)) + 1e-6
    return gaussian_filter1d(np.maximum(20 * np.log10(rms / rms.max()), -40.0), 1.0)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("mead")
    paths = generate_mead(out, ["M003"], ["angry", "happy", "neutral"], [1, 3], 1, seed=0, image_size=SIZE)
    assert paths == [out / "M003.tar"]
    return out, paths[0]


@pytest.fixture(scope="module")
def clips(demo: tuple[Path, Path]) -> dict[str, dict]:
    """Decoded media and ground truth per clip key."""
    out, tar = demo
    inner = _inner(tar)
    gt, _ = read_ground_truth(out, "M003")
    result = {}
    for key in EXPECTED:
        emo, lvl = key.split("/")
        frames, fps, vcodec, pix = _decode_video(
            _member_bytes(inner["video.tar"], f"video/front/{key}/001.mp4")
        )
        audio, rate, acodec = _decode_audio(_member_bytes(inner["audio.tar"], f"audio/{key}/001.m4a"))
        result[key] = dict(
            frames=frames,
            fps=fps,
            vcodec=vcodec,
            pix=pix,
            audio=audio,
            rate=rate,
            acodec=acodec,
            **gt[f"{key}/001"],
        )
    return result


def test_archive_is_mead_shaped(demo: tuple[Path, Path]) -> None:
    out, tar = demo
    inner = _inner(tar)
    assert sorted(inner) == ["audio.tar", "video.tar"]
    with tarfile.open(tar) as tf:
        assert all(m.mtime == FIXED_MTIME and m.uid == 0 for m in tf.getmembers())
    videos = sorted(m.name for m in inner["video.tar"].getmembers() if m.isfile())
    audios = sorted(m.name for m in inner["audio.tar"].getmembers() if m.isfile())
    assert videos == [f"video/front/{k}/001.mp4" for k in EXPECTED]
    assert audios == [f"audio/{k}/001.m4a" for k in EXPECTED]  # neutral: level_1 only
    dirs = {m.name for m in inner["video.tar"].getmembers() if m.isdir()}
    assert {"video", "video/front", "video/front/neutral", "video/front/neutral/level_1"} <= dirs
    assert all(m.mtime == FIXED_MTIME for t in inner.values() for m in t.getmembers())
    gt_file = ground_truth_path(out, "M003")
    assert gt_file == out / "ground_truth" / "M003.npz" and gt_file.is_file()
    gt, meta = read_ground_truth(out, "M003")
    assert sorted(gt) == [f"{k}/001" for k in EXPECTED]
    assert meta["fps"] == 30 and meta["clips"]["angry/level_1/001"]["sentence"] in SENTENCES


def test_media_formats_and_lengths(clips: dict[str, dict]) -> None:
    for key, c in clips.items():
        assert c["vcodec"] == "h264" and c["pix"] == "yuv420p" and c["fps"] == 30.0, key
        assert c["frames"].shape[1:] == (SIZE, SIZE, 3)
        n = len(c["frames"])
        assert 1.2 * 30 <= n <= 4.0 * 30, f"{key}: {n} frames is not a short sentence"
        assert c["motion"].shape == (n, MOTION_DIM) and c["motion"].dtype == np.float32
        assert c["envelope"].shape == (n,)
        assert c["acodec"] == "aac" and c["rate"] == MEAD_AUDIO_RATE
        # AAC adds at most one frame of padding; durations agree within 1 video frame.
        assert abs(len(c["audio"]) / MEAD_AUDIO_RATE - n / 30) <= 1 / 30 + 1024 / MEAD_AUDIO_RATE, key


def test_audio_is_real_speech(clips: dict[str, dict]) -> None:
    for key, c in clips.items():
        n = len(c["frames"])
        env = _rms_envelope(c["audio"], n)
        assert np.sqrt(np.mean(c["audio"] ** 2)) > 0.01, key
        loud = env > -20
        assert 0.3 < loud.mean() < 0.95, f"{key}: speech should have pauses and voiced parts"
        assert env.std() > 5.0, f"{key}: loudness should vary over the sentence"
        # Speech is spectrally rich, not a tone: many bins carry energy.
        spec = np.abs(np.fft.rfft(c["audio"])) ** 2
        assert (spec > spec.max() * 1e-3).mean() > 0.05
    # Prosody follows emotion: the same sentence is spoken slower when sad than when angry.
    voice = voice_for_actor("M003", 0)
    sad = synthesize(SENTENCES[0], voice, prosody_for("sad", 3))
    angry = synthesize(SENTENCES[0], voice, prosody_for("angry", 3))
    assert len(sad) > 1.3 * len(angry)


def test_mouth_opening_follows_audio(clips: dict[str, dict]) -> None:
    y0, y1, x0, x1 = int(0.55 * SIZE), int(0.76 * SIZE), int(0.36 * SIZE), int(0.64 * SIZE)
    for key in ("angry/level_3", "neutral/level_1"):
        c = clips[key]
        roi = c["frames"][:, y0:y1, x0:x1].astype(np.float64)
        luminance = roi @ np.array([0.299, 0.587, 0.114])
        dark = (luminance < 50).mean(axis=(1, 2))  # mouth interior
        audio_env = _rms_envelope(c["audio"], len(dark))
        assert np.corrcoef(dark, audio_env)[0, 1] > 0.6, key
        jaw = c["motion"][:, LIP_INDICES[0]]
        assert np.corrcoef(dark, jaw)[0, 1] > 0.85, key
        assert np.corrcoef(jaw, c["envelope"])[0, 1] > 0.95, key
        # every lip coefficient is driven by audio features, so audio predicts the lip branch
        lips = c["motion"][:, list(LIP_INDICES)]
        assert np.all(lips.std(axis=0) > 1e-3)


def test_emotion_changes_the_face(clips: dict[str, dict]) -> None:
    brow = (slice(int(0.25 * SIZE), int(0.42 * SIZE)), slice(int(0.3 * SIZE), int(0.7 * SIZE)))
    mean = {k: c["frames"].astype(np.float64).mean(axis=0) for k, c in clips.items()}
    d_emotion = np.abs(mean["angry/level_3"][brow] - mean["happy/level_3"][brow]).mean()
    d_level = np.abs(mean["angry/level_3"][brow] - mean["angry/level_1"][brow]).mean()
    assert d_emotion > 2.0 and d_emotion > d_level
    # Face-branch ground truth separates emotions frame by frame (nearest centroid).
    feats = {k: c["motion"][:, list(FACE_INDICES)] for k, c in clips.items() if k.endswith("level_3")}
    feats["neutral"] = clips["neutral/level_1"]["motion"][:, list(FACE_INDICES)]
    cents = np.stack([f.mean(axis=0) for f in feats.values()])
    correct = sum(
        int(np.sum(np.argmin(((f[:, None, :] - cents[None]) ** 2).sum(-1), axis=1) == i))
        for i, f in enumerate(feats.values())
    )
    assert correct / sum(len(f) for f in feats.values()) > 0.9
    # Renderer level: static faces of different emotions differ in the brow/mouth area.
    idn = identity_for_actor("M003", 0)
    faces = {}
    for emo, controls in EMOTION_FACE.items():
        m = np.zeros(MOTION_DIM, np.float32)
        m[[6, 8, 15, 16, 17]] = controls
        faces[emo] = render_frame(m, idn, 128).astype(np.float64)[32:100, 38:90]  # brows..mouth
    names = list(faces)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert np.abs(faces[a] - faces[b]).mean() > 0.4, (a, b)


def test_deterministic_from_seed(tmp_path: Path) -> None:
    kw = dict(actors=["W009"], emotions=["sad"], levels=[2], sentences_per_level=1, image_size=96)
    a = generate_mead(tmp_path / "a", seed=5, **kw)[0]  # type: ignore[arg-type]
    b = generate_mead(tmp_path / "b", seed=5, **kw)[0]  # type: ignore[arg-type]
    c = generate_mead(tmp_path / "c", seed=6, **kw)[0]  # type: ignore[arg-type]
    ia, ib, ic = _inner(a), _inner(b), _inner(c)
    listing = {k: [(m.name, m.mtime, m.mode) for m in t.getmembers()] for k, t in ia.items()}
    assert listing == {k: [(m.name, m.mtime, m.mode) for m in t.getmembers()] for k, t in ib.items()}
    name_v, name_a = "video/front/sad/level_2/001.mp4", "audio/sad/level_2/001.m4a"
    fa, fb = (
        _decode_video(_member_bytes(ia["video.tar"], name_v))[0],
        _decode_video(_member_bytes(ib["video.tar"], name_v))[0],
    )
    np.testing.assert_array_equal(fa, fb)
    np.testing.assert_array_equal(
        _decode_audio(_member_bytes(ia["audio.tar"], name_a))[0],
        _decode_audio(_member_bytes(ib["audio.tar"], name_a))[0],
    )
    ga, gb, gc = (read_ground_truth(p.parent, "W009")[0] for p in (a, b, c))
    np.testing.assert_array_equal(ga["sad/level_2/001"]["motion"], gb["sad/level_2/001"]["motion"])
    assert (
        ground_truth_path(a.parent, "W009").read_bytes() == ground_truth_path(b.parent, "W009").read_bytes()
    )
    # another seed: different motion and different pixels
    mc = gc["sad/level_2/001"]["motion"]
    ma = ga["sad/level_2/001"]["motion"]
    assert mc.shape != ma.shape or not np.allclose(mc, ma)
    fc = _decode_video(_member_bytes(ic["video.tar"], name_v))[0]
    assert fc.shape != fa.shape or np.abs(fc.astype(int) - fa.astype(int)).mean() > 1.0


def test_video_split_variant(tmp_path: Path) -> None:
    tar = generate_mead(
        tmp_path, ["W015"], ["happy", "angry"], [1], 1, seed=0, image_size=64, video_split=True
    )[0]
    inner = _inner(tar)
    assert sorted(inner) == ["audio.tar", "video_1.tar", "video_2.tar"]
    v1 = [m.name for m in inner["video_1.tar"].getmembers() if m.isfile()]
    v2 = [m.name for m in inner["video_2.tar"].getmembers() if m.isfile()]
    assert v1 == ["video/front/angry/level_1/001.mp4"]  # split in MEAD emotion order
    assert v2 == ["video/front/happy/level_1/001.mp4"]


def test_extracts_and_loads_ground_truth(tmp_path: Path, demo: tuple[Path, Path]) -> None:
    out, tar = demo
    extract = pytest.importorskip("emotalker.tasks.data.extract")
    extract.extract_mead_actor(tar, tmp_path / "raw")
    found = extract.scan_mead_tree(tmp_path / "raw")
    assert len(found) == len(EXPECTED) and all(c["audio_path"] is not None for c in found)
    for clip in found:
        motion = load_ground_truth(out, clip)
        assert motion.shape == (len(_decode_video(clip["video_path"].read_bytes())[0]), MOTION_DIM)
    clip = dict(found[0])
    np.testing.assert_array_equal(load_ground_truth(out / "ground_truth", clip), load_ground_truth(out, clip))
    side = load_ground_truth(out, dict(clip, view="left_30"))
    np.testing.assert_allclose(side[:, 65] - load_ground_truth(out, clip)[:, 65], -np.pi / 6, atol=1e-6)
    with pytest.raises(GroundTruthError, match="sad/level_2/001"):
        load_ground_truth(out, dict(clip, emotion="sad", level=2))
    with pytest.raises(FileNotFoundError, match="W999"):
        load_ground_truth(out, dict(clip, actor="W999"))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"actors": []}, "actors is empty"),
        ({"actors": ["X12"]}, "X12"),
        ({"emotions": ["angry", "bored"]}, "bored"),
        ({"emotions": []}, "emotions is empty"),
        ({"levels": [4]}, r"\[4\]"),
        ({"image_size": 63}, "image_size"),
        ({"views": ("side",)}, "side"),
        ({"video_split": True}, "video_split"),
        ({"sentences_per_level": 0}, "sentences_per_level"),
    ],
)
def test_bad_input_raises(tmp_path: Path, kwargs: dict, match: str) -> None:
    args = dict(actors=["M003"], emotions=["angry"], levels=[1], sentences_per_level=1, seed=0) | kwargs
    with pytest.raises(ValueError, match=match):
        generate_mead(tmp_path / "out", **args)  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_envelope_tracks_loudness() -> None:
    rate = MEAD_AUDIO_RATE
    t = np.arange(rate) / rate
    x = np.where((t > 0.4) & (t < 0.7), 0.5 * np.sin(2 * np.pi * 200 * t), 0.0).astype(np.float32)
    env = speech_envelope(x)
    assert env.shape == (30,)
    assert env[15:19].min() > 0.8 and env[:9].max() < 0.1 and env[24:].max() < 0.1
    with pytest.raises(ValueError, match="shorter than one frame"):
        speech_envelope(np.zeros(10, np.float32))


def test_voice_quality_carries_the_emotion_at_every_level() -> None:
    """Anger brightens the voice and sadness darkens it (spectral tilt), fear shakes it (7 Hz tremolo),
    each emotion colours it in a band of its own,
    by more at higher levels; neutral speech is left as espeak-ng speaks it."""
    voice = voice_for_actor("W009", 0)

    def high_share(x: np.ndarray) -> float:
        spec = np.abs(np.fft.rfft(x)) ** 2
        freqs = np.fft.rfftfreq(len(x), 1.0 / MEAD_AUDIO_RATE)
        return float(spec[freqs >= TILT_SPLIT_HZ].sum() / spec.sum())

    neutral = prosody_for("neutral", 1)
    raw = synthesize(SENTENCES[3], voice, neutral)
    assert np.array_equal(voice_quality(raw, neutral, MEAD_AUDIO_RATE), raw.astype(np.float64))
    shares = {
        (e, lv): high_share(voice_quality(raw, prosody_for(e, lv), MEAD_AUDIO_RATE))
        for e in ("angry", "sad")
        for lv in (1, 3)
    }
    base = high_share(raw)
    assert base < shares["angry", 1] < shares["angry", 3]
    assert base > shares["sad", 1] > shares["sad", 3]
    # colour: each emotion lifts a band of its own (at its centre frequency), by more at higher levels
    centres = {e: prosody_for(e, 3).colour_hz for e in EMOTIONS if e != "neutral"}
    assert len(set(centres.values())) == len(centres)

    def band_share(x: np.ndarray, hz: float) -> float:
        spec = np.abs(np.fft.rfft(x)) ** 2
        freqs = np.fft.rfftfreq(len(x), 1.0 / MEAD_AUDIO_RATE)
        return float(spec[(freqs > hz / 1.1) & (freqs < hz * 1.1)].sum() / spec.sum())

    for emotion, hz in centres.items():
        lifted = [
            band_share(voice_quality(raw, p, MEAD_AUDIO_RATE), hz)
            / band_share(voice_quality(raw, replace(p, colour_db=0.0), MEAD_AUDIO_RATE), hz)
            for p in (prosody_for(emotion, 1), prosody_for(emotion, 3))
        ]
        assert 1.5 < lifted[0] < lifted[1], emotion
    # fear: the loudness envelope oscillates at the tremolo's rate
    shaky = voice_quality(np.ones(MEAD_AUDIO_RATE), prosody_for("fear", 3), MEAD_AUDIO_RATE)
    spectrum = np.abs(np.fft.rfft(shaky - shaky.mean()))
    assert np.argmax(spectrum) == round(prosody_for("fear", 3).tremolo_hz)  # 1 s of signal: 1 Hz bins
