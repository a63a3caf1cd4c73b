"""Rendering a talking head: modes, output sizes, streamed video with audio, SadTalker interchange .mat."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import scipy.io
import soundfile as sf
import torch

from emotalker.configs.schema import load_config
from emotalker.tasks.generation.render import (
    RenderInputError,
    SourceImage,
    driving_coefficients,
    load_renderer,
    render_frames,
    sadtalker_coeff_3dmm,
    sadtalker_crop_box,
    write_video,
)

NARROW_SET = [
    "render.image_size=128",
    "render.widths.kp_block_expansion=8",
    "render.widths.kp_max_features=64",
    "render.widths.generator_block_expansion=8",
    "render.widths.generator_max_features=64",
    "render.widths.dense_block_expansion=4",
    "render.widths.dense_max_features=32",
    "render.widths.dense_compress=1",
    "render.widths.mapping_descriptor=32",
    "render.widths.spade_hidden=16",
    "render.widths.reshape_depth=8",
    "device=cpu",
]


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    from emotalker.tasks.demo.assets import renderer_standins as make_renderer_standins

    d = tmp_path_factory.mktemp("render")
    c = load_config(
        None,
        NARROW_SET
        + [
            f"render.checkpoint={d}/SadTalker_V0.0.2_256.safetensors",
            f"render.mapping_checkpoint={d}/mapping_00229-model.pth.tar",
            f"render.mapping_full_checkpoint={d}/mapping_00109-model.pth.tar",
        ],
    )
    make_renderer_standins(c)
    return c


@pytest.fixture(scope="module")
def renderer(cfg):
    return load_renderer(cfg, "cpu", ("crop", "full", "still"))


@pytest.fixture
def source():
    """A prepared source without the face models: a 150 x 122 photo with the face box inside it."""
    rng = np.random.default_rng(0)
    original = rng.integers(0, 255, (150, 122, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:128, 0:128] / 128.0
    image = np.stack([xx, yy, 0.5 * (xx + yy)]).astype(np.float32)
    coeffs = rng.normal(0, 0.2, 257).astype(np.float32)
    return SourceImage(
        image=image,
        coeff_3dmm=sadtalker_coeff_3dmm(coeffs, np.array([122, 150, 1.1, 60.0, 70.0])),
        coeffs=coeffs,
        box=(10, 20, 90, 120),
        original=original,
        landmarks=np.zeros((68, 2), np.float32),
    )


def _motion(t: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 0.3, (t, 70)).astype(np.float32)


def test_modes_give_one_frame_per_motion_row_at_their_sizes(renderer, source):
    motion = _motion(5)
    crop = np.concatenate(list(render_frames(renderer, source, motion, "crop", batch_size=2)))
    # crop: render width, the face box's aspect (80 x 100 box -> 128 x 160)
    assert crop.shape == (5, 160, 128, 3) and crop.dtype == np.uint8
    full = np.concatenate(list(render_frames(renderer, source, motion, "full", batch_size=4)))
    assert full.shape == (5, 150, 122, 3)  # the photo's own size
    outside = np.ones((150, 122), bool)
    outside[20:120, 10:90] = False
    np.testing.assert_array_equal(
        full[:, outside], np.broadcast_to(source.original[outside], (5, outside.sum(), 3))
    )
    assert crop.std(axis=0).max() > 0  # frames differ with the motion


def test_still_takes_the_head_pose_from_the_source(renderer, source):
    a = _motion(4, seed=1)
    b = a.copy()
    b[:, 64:70] += 0.5  # same expression, other pose and translation
    src_row, target = driving_coefficients(source, a, "still")
    np.testing.assert_array_equal(target[:, 64:70], np.broadcast_to(source.coeff_3dmm[64:70], (4, 6)))
    still_a = np.concatenate(list(render_frames(renderer, source, a, "still", 4)))
    still_b = np.concatenate(list(render_frames(renderer, source, b, "still", 4)))
    np.testing.assert_array_equal(still_a, still_b)
    crop_a = np.concatenate(list(render_frames(renderer, source, a, "crop", 4)))
    crop_b = np.concatenate(list(render_frames(renderer, source, b, "crop", 4)))
    assert np.abs(crop_a.astype(int) - crop_b.astype(int)).max() > 0


def test_full_mode_appends_the_source_crop_parameters(source):
    src_row, target = driving_coefficients(source, _motion(3), "full")
    assert src_row.shape == (1, 73) and target.shape == (3, 73)
    np.testing.assert_allclose(target[:, 70:], np.broadcast_to([1.1, 60.0, 70.0], (3, 3)), rtol=1e-6)


def test_frames_are_rendered_lazily_batch_by_batch(renderer, source):
    calls = []
    original = renderer.render

    def counting(state, windows):
        calls.append(len(windows))
        return original(state, windows)

    renderer.render = counting
    try:
        gen = render_frames(renderer, source, _motion(9), "crop", batch_size=3)
        first = next(gen)
        assert first.shape[0] == 3 and calls == [3]  # nothing beyond the first batch yet
        gen.close()
    finally:
        del renderer.render


def test_bad_motion_and_mode_are_named(renderer, source):
    with pytest.raises(RenderInputError, match=r"\(T, 70\)"):
        next(render_frames(renderer, source, np.zeros((5, 64), np.float32), "crop"))
    with pytest.raises(RenderInputError, match="unknown render mode"):
        next(render_frames(renderer, source, _motion(2), "sideways"))


def test_missing_checkpoint_names_the_key_and_the_download(cfg, tmp_path):
    c = cfg.model_copy(deep=True)
    c.render.mapping_full_checkpoint = tmp_path / "nope.pth.tar"
    load_renderer(c, "cpu", ("crop",))  # crop does not need the full-mode mapping
    with pytest.raises(FileNotFoundError) as err:
        load_renderer(c, "cpu", ("full",))
    msg = str(err.value)
    assert (
        "render.mapping_full_checkpoint" in msg and "mapping_00109-model.pth.tar" in msg and "\n" not in msg
    )


def _probe(path) -> dict:
    entries = "stream=codec_type,codec_name,nb_read_frames,width,height,r_frame_rate"
    cmd = ["ffprobe", "-v", "error", "-count_frames", "-show_entries", entries, "-of", "json", str(path)]
    return json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)


def test_video_has_every_frame_and_the_audio(renderer, source, tmp_path):
    audio = tmp_path / "speech.wav"
    sf.write(audio, np.sin(np.linspace(0, 900, 22050 * 2)).astype(np.float32) * 0.3, 22050)  # 2 s, 22 kHz
    frames = render_frames(renderer, source, _motion(7), "full", batch_size=3)
    out = write_video(frames, audio, tmp_path / "video.mp4")
    streams = {s["codec_type"]: s for s in _probe(out)["streams"]}
    v, a = streams["video"], streams["audio"]
    assert v["codec_name"] == "h264" and int(v["nb_read_frames"]) == 7 and v["r_frame_rate"] == "25/1"
    assert (v["width"], v["height"]) == (122, 150)
    assert a["codec_name"] == "aac"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["speech.wav", "video.mp4"]  # no temp file left


def test_source_mat_in_sadtalker_preprocess_layout(renderer, source, tmp_path):
    from emotalker.tasks.generation.animate import save_video_outputs

    audio = tmp_path / "a.wav"
    sf.write(audio, np.zeros(16000, np.float32), 16000)
    out = save_video_outputs(tmp_path / "gen", renderer, source, _motion(3), audio, mode="crop", batch_size=2)
    mat = scipy.io.loadmat(out["source_mat"])
    assert mat["coeff_3dmm"].shape == (1, 73) and mat["full_3dmm"].shape == (1, 257)
    c = source.coeffs
    np.testing.assert_allclose(mat["coeff_3dmm"][0, :64], c[80:144], rtol=1e-6)  # exp
    np.testing.assert_allclose(mat["coeff_3dmm"][0, 64:67], c[224:227], rtol=1e-6)  # angle
    np.testing.assert_allclose(mat["coeff_3dmm"][0, 67:70], c[254:257], rtol=1e-6)  # trans
    np.testing.assert_allclose(mat["coeff_3dmm"][0, 70:], [1.1, 60.0, 70.0], rtol=1e-6)  # crop s, tx, ty
    np.testing.assert_allclose(mat["full_3dmm"][0], c, rtol=1e-6)
    assert int(_probe(out["video"])["streams"][0]["nb_read_frames"]) == 3


def test_crop_box_follows_sadtalkers_croper():
    from emotalker.tasks.demo.standins.fake_face_assets import project_template, synthetic_lm3d_68

    lm = project_template(synthetic_lm3d_68(), center=(300.0, 260.0), scale=100.0)
    x0, y0, x1, y1 = sadtalker_crop_box(lm, 640, 480)
    eyes_mouth = lm[36:68]
    assert x0 < eyes_mouth[:, 0].min() and eyes_mouth[:, 0].max() < x1
    assert y0 < eyes_mouth[:, 1].min() and eyes_mouth[:, 1].max() < y1
    assert abs((x1 - x0) - (y1 - y0)) <= 2  # an upright face gives a square crop
    # side = 2 x max(2 x eye distance, 1.8 x eye-to-mouth distance)
    eye_dist = np.linalg.norm(lm[42:48].mean(0) - lm[36:42].mean(0))
    mouth = (lm[48] + lm[54]) / 2 - (lm[36:48].mean(0))
    assert abs((x1 - x0) - 2 * max(2 * eye_dist, 1.8 * np.linalg.norm(mouth))) <= 2
    near_edge = sadtalker_crop_box(lm - [250, 0], 640, 480)
    assert near_edge[0] == 0  # clamped to the image


def test_render_dtype_key_sets_the_generator_precision(cfg, source):
    c = cfg.model_copy(deep=True)
    c.render.dtype = "bfloat16"
    rb = load_renderer(c, "cpu", ("crop",))
    assert rb.dtype == torch.bfloat16 and load_renderer(cfg, "cpu", ("crop",)).dtype == torch.float32
    # only the image-space layers change precision; the warp (dense motion, appearance volume) stays float32
    assert {p.dtype for p in rb.generator.decoder.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in rb.generator.dense_motion_network.parameters()} == {torch.float32}
    assert {p.dtype for p in rb.generator.resblocks_3d.parameters()} == {torch.float32}
    frames = next(render_frames(rb, source, _motion(2), "crop", 2))
    assert frames.dtype == np.uint8 and frames.shape[0] == 2


def test_512_release_renders_512_px_frames(tmp_path):
    """SadTalker_V0.0.2_512.safetensors has the 256 file's layout (the network is convolutional): it loads
    strictly with ``render.image_size=512`` and renders frames at the source crop's 512 px."""
    from emotalker.tasks.demo.assets import renderer_standins as make_renderer_standins

    c = load_config(
        None,
        NARROW_SET
        + [
            "render.image_size=512",
            f"render.checkpoint={tmp_path}/SadTalker_V0.0.2_512.safetensors",
            f"render.mapping_checkpoint={tmp_path}/mapping_00229-model.pth.tar",
            f"render.mapping_full_checkpoint={tmp_path}/mapping_00109-model.pth.tar",
        ],
    )
    make_renderer_standins(c)
    r = load_renderer(c, "cpu", ("crop",))
    yy, xx = np.mgrid[0:512, 0:512] / 512.0
    coeffs = np.random.default_rng(0).normal(0, 0.2, 257).astype(np.float32)
    src = SourceImage(
        image=np.stack([xx, yy, 0.5 * (xx + yy)]).astype(np.float32),
        coeff_3dmm=sadtalker_coeff_3dmm(coeffs, np.array([512, 512, 1.0, 256.0, 256.0])),
        coeffs=coeffs,
        box=(0, 0, 512, 512),
        original=np.zeros((512, 512, 3), np.uint8),
        landmarks=np.zeros((68, 2), np.float32),
    )
    frames = np.concatenate(list(render_frames(r, src, _motion(3), "crop", batch_size=2)))
    assert frames.shape == (3, 512, 512, 3)
    assert len({f.tobytes() for f in frames}) == 3  # each frame follows its own motion row
