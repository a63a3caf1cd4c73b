"""Generation from a real face photo and synthesized speech with the trained tiny models (slow, run in CI)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import av
import numpy as np
import pytest
import scipy.io
import soundfile as sf

from emotalker.tasks.generation.animate import InputError
from emotalker_testkit.pipeline import CONFIG

pytestmark = pytest.mark.slow


def _speech(sample_rate: int, frames: int, text: str) -> np.ndarray:
    """Stereo (N, 2) espeak-ng speech lasting ``frames + 0.5`` video frames (T is unambiguous)."""
    from emotalker.tasks.demo.synthetic.speech import prosody_for, synthesize, voice_for_actor

    mono = synthesize(text, voice_for_actor("W009", 0), prosody_for("happy", 3), sample_rate=sample_rate)
    n = frames * sample_rate // 25 + sample_rate // 50
    reps = -(-n // len(mono))
    mono = np.tile(mono, reps)[:n]  # long audio by concatenation
    return np.stack([mono, 0.8 * mono], axis=1)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A real face photo (skimage's astronaut) and speech files at non-16 kHz stereo."""
    import cv2
    from skimage import data

    d = tmp_path_factory.mktemp("gen-inputs")
    face = d / "astronaut.jpg"
    cv2.imwrite(str(face), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    speech = d / "speech_22k_stereo.wav"
    sf.write(speech, _speech(22_050, 60, "Please bring me the papers by noon."), 22_050)
    long = d / "long_48k_stereo.wav"
    sf.write(long, _speech(48_000, 750, "She left the blue coat on the train."), 48_000)
    short = d / "short.wav"
    sf.write(short, np.zeros(480, np.float32), 16_000)  # 30 ms: enough for HuBERT, not one video frame
    text = d / "not_an_image.txt"
    text.write_text("this is not a picture\n")
    return {"face": face, "speech": speech, "long": long, "short": short, "text": text, "dir": d}


def _check_video(out: Path, frames: int, size: tuple[int, int] | None = None) -> None:
    """video.mp4: one rendered frame per motion frame at 25 fps, an AAC audio stream; source.mat 73/257."""
    with av.open(str(out / "video.mp4")) as c:
        assert len(c.streams.video) == 1 and len(c.streams.audio) == 1
        vs = c.streams.video[0]
        assert vs.average_rate == 25 and vs.codec_context.name == "h264"
        assert c.streams.audio[0].codec_context.name == "aac"
        if size is not None:
            assert (vs.codec_context.width, vs.codec_context.height) == size
        assert sum(1 for _ in c.decode(vs)) == frames
    src = scipy.io.loadmat(out / "source.mat")
    assert src["coeff_3dmm"].shape == (1, 73) and src["full_3dmm"].shape == (1, 257)
    np.testing.assert_allclose(src["coeff_3dmm"][0, :64], src["full_3dmm"][0, 80:144], rtol=1e-6)


def _check_outputs(out: Path, frames: int, seconds: float) -> None:
    _check_video(out, frames)
    motion = np.load(out / "motion.npy")
    assert motion.shape == (frames, 70) and np.isfinite(motion).all()
    assert motion[:, :64].std(axis=0).max() > 0  # the expression moves over time
    mat = scipy.io.loadmat(out / "motion.mat")
    assert mat["coeff_3dmm"].shape == (frames, 70)
    np.testing.assert_allclose(mat["coeff_3dmm"], motion, rtol=1e-6)
    full = mat["full_3dmm"]
    assert full.shape == (frames, 257)
    # Deep3DFace layout: id 0:80, exp 80:144, tex 144:224, angle 224:227, gamma 227:254, trans 254:257
    np.testing.assert_allclose(full[:, 80:144], motion[:, :64], rtol=1e-6)
    np.testing.assert_allclose(full[:, 224:227], motion[:, 64:67], rtol=1e-6)
    np.testing.assert_allclose(full[:, 254:257], motion[:, 67:70], rtol=1e-6)
    assert np.ptp(full[:, :80], axis=0).max() == 0  # one identity for every frame
    assert (out / "coefficients.png").stat().st_size > 0
    with av.open(str(out / "preview.mp4")) as c:
        assert len(c.streams.video) == 1 and len(c.streams.audio) == 1
        vs = c.streams.video[0]
        assert vs.average_rate == 25
        n_video = sum(1 for _ in c.decode(vs))
    assert n_video == frames
    with av.open(str(out / "preview.mp4")) as c:
        audio_s = sum(f.samples for f in c.decode(c.streams.audio[0])) / c.streams.audio[0].rate
    # the whole input audio is muxed; AAC adds up to two 1024-sample frames (priming + final padding)
    assert -0.01 < audio_s - seconds < 2 * 1024 / 16_000 + 0.01


def test_generate_from_photo_and_converted_speech(trained, inputs, tmp_path):
    from emotalker.flows.generate import generate_flow

    info = sf.info(inputs["speech"])
    frames = math.floor(info.frames / info.samplerate * 25)
    assert frames == 60
    out = tmp_path / "gen"
    result = generate_flow(
        image=str(inputs["face"]),
        audio=str(inputs["speech"]),
        out_dir=str(out),
        config=CONFIG,
        overrides=trained["overrides"],
    )
    assert result["frames"] == frames
    assert "22050 Hz, 2 channel(s)" in result["audio_note"]
    assert Path(result["preview"]) == out / "preview.mp4"
    _check_outputs(out, frames, info.frames / info.samplerate)


def test_generate_long_audio(trained, inputs, tmp_path):
    from emotalker.flows.generate import generate_flow

    out = tmp_path / "long"
    result = generate_flow(
        image=str(inputs["face"]),
        audio=str(inputs["long"]),
        out_dir=str(out),
        config=CONFIG,
        overrides=trained["overrides"],
    )
    assert result["frames"] == 750 and abs(result["audio_seconds"] - 30.02) < 0.01
    _check_outputs(out, 750, 750.5 / 25)


@pytest.mark.parametrize(
    ("image", "audio", "message"),
    [
        ("text", "speech", "not an image"),
        ("dir/missing.jpg", "speech", "not found"),
        ("face", "dir/missing.wav", "not found"),
        ("face", "short", "shorter than one video frame"),
        ("face", "text", "not a readable audio file"),
    ],
)
def test_bad_inputs_name_the_file(trained, inputs, tmp_path, image, audio, message):
    from emotalker.flows.generate import generate_flow

    def path(key: str) -> Path:
        return inputs["dir"] / key.split("/", 1)[1] if key.startswith("dir/") else inputs[key]

    with pytest.raises(InputError) as err:
        generate_flow(
            image=str(path(image)),
            audio=str(path(audio)),
            out_dir=str(tmp_path / "bad"),
            config=CONFIG,
            overrides=trained["overrides"],
        )
    bad = path(image) if message == "not an image" or "jpg" in image else path(audio)
    assert message in str(err.value) and bad.name in str(err.value)
    assert not (tmp_path / "bad" / "motion.npy").exists()


def test_cli_generate(trained, inputs, tmp_path, capsys):
    from emotalker.flows.cli import main

    out = tmp_path / "cli"
    argv = ["generate", "--image", str(inputs["face"]), "--audio", str(inputs["speech"])]
    argv += ["--out", str(out), "--config", CONFIG, "--mode", "full"]
    for item in trained["overrides"]:
        argv += ["--set", item]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    result = json.loads(printed[printed.index("{") :])
    assert result["frames"] == 60 and result["motion_npy"] == str(out / "motion.npy")
    _check_outputs(out, 60, 60.5 / 25)
    _check_video(out, 60, size=(512, 512))  # full: the rendered face pasted back into the 512 px photo


def test_emotion_reference_driving_frames_from_coefficients_and_video(trained, inputs, tmp_path, capsys):
    """--emotion-reference: driving frames (.npy, SadTalker .mat or a video) replace the neutral reference."""
    from emotalker.flows.cli import main
    from emotalker.flows.generate import generate_flow
    from emotalker.storage.manifest import Manifest
    from emotalker.storage.zarr_store import feature_store

    cfg = trained["cfg"]
    rows = [r for r in Manifest(cfg.paths.resolve("manifest")).records() if r["emotion"] == "happy"]
    clip = rows[0]
    driving = feature_store(cfg.paths, "face").read_clip(clip["clip_id"], ["motion"])["motion"]
    npy, mat = tmp_path / "driving.npy", tmp_path / "driving.mat"
    np.save(npy, driving)
    scipy.io.savemat(mat, {"coeff_3dmm": np.concatenate([driving, np.zeros((len(driving), 3))], axis=1)})

    def run(name: str, ref: Path | None) -> np.ndarray:
        argv = ["generate", "--image", str(inputs["face"]), "--audio", str(inputs["speech"])]
        argv += ["--out", str(tmp_path / name), "--config", CONFIG]
        argv += ["--emotion-reference", str(ref)] if ref is not None else []
        for item in trained["overrides"]:
            argv += ["--set", item]
        assert main(argv) == 0
        printed = capsys.readouterr().out
        result = json.loads(printed[printed.index("{") :])
        assert ("driving frames" in result["reference"]) == (ref is not None)
        return np.load(tmp_path / name / "motion.npy")

    neutral, from_npy, from_mat = run("neutral", None), run("npy", npy), run("mat", mat)
    assert from_npy.shape == neutral.shape == (60, 70)
    assert not np.allclose(from_npy, neutral, atol=1e-3)  # the driving frames are used
    assert np.allclose(from_npy, from_mat, atol=1e-5)  # the same frames, read from either format
    # a video: its frames go through the configured face extractor (here the real one on stand-in weights)
    video = generate_flow(
        image=str(inputs["face"]),
        audio=str(inputs["speech"]),
        out_dir=str(tmp_path / "video"),
        config=CONFIG,
        overrides=[*trained["overrides"], "face.source=extract"],
        emotion_reference=clip["prepared_video"],
    )
    assert f"({clip['n_frames']} frames)" in video["reference"]
    bad = tmp_path / "driving.txt"
    bad.write_text("not frames")
    for path, message in [(bad, "must be a video"), (tmp_path / "absent.npy", "not found")]:
        with pytest.raises(InputError, match=message) as err:
            generate_flow(
                image=str(inputs["face"]),
                audio=str(inputs["speech"]),
                out_dir=str(tmp_path / "bad"),
                config=CONFIG,
                overrides=trained["overrides"],
                emotion_reference=str(path),
            )
        assert path.name in str(err.value)
    np.save(tmp_path / "narrow.npy", driving[:, :57])
    with pytest.raises(InputError, match=r"\(T, 70\)"):
        generate_flow(
            image=str(inputs["face"]),
            audio=str(inputs["speech"]),
            out_dir=str(tmp_path / "bad"),
            config=CONFIG,
            overrides=trained["overrides"],
            emotion_reference=str(tmp_path / "narrow.npy"),
        )


def test_cli_generate_method_sadtalker(trained, inputs, tmp_path, capsys):
    """--method sadtalker: SadTalker's ExpNet + PoseVAE (the demo stand-ins in render.checkpoint) through the
    same renderer and outputs; the seed decides blinks and head motion; a missing file names its key."""
    from emotalker.flows.cli import main
    from emotalker.flows.generate import generate_flow

    def run(out: Path, seed: int) -> dict:
        argv = ["generate", "--image", str(inputs["face"]), "--audio", str(inputs["speech"])]
        argv += ["--out", str(out), "--config", CONFIG, "--method", "sadtalker"]
        for item in [*trained["overrides"], f"sadtalker.seed={seed}", "sadtalker.pose_style=3"]:
            argv += ["--set", item]
        assert main(argv) == 0
        printed = capsys.readouterr().out
        return json.loads(printed[printed.index("{") :])

    result = run(tmp_path / "st", 1)
    assert result["method"] == "sadtalker" and result["frames"] == 60
    assert result["models"]["pose_style"] == 3 and "audio2pose" in result["models"]["sadtalker"]
    _check_outputs(tmp_path / "st", 60, 60.5 / 25)
    motion = np.load(tmp_path / "st" / "motion.npy")
    assert motion[:, 64:67].std(axis=0).max() > 0  # PoseVAE moves the head
    run(tmp_path / "same", 1)
    np.testing.assert_array_equal(np.load(tmp_path / "same" / "motion.npy"), motion)
    run(tmp_path / "other", 2)
    assert not np.array_equal(np.load(tmp_path / "other" / "motion.npy"), motion)
    with pytest.raises(InputError, match="sadtalker.audio2pose_checkpoint"):
        generate_flow(
            image=str(inputs["face"]),
            audio=str(inputs["speech"]),
            out_dir=str(tmp_path / "bad"),
            config=CONFIG,
            overrides=[*trained["overrides"], f"sadtalker.audio2pose_checkpoint={tmp_path / 'none.pth'}"],
            method="sadtalker",
        )
