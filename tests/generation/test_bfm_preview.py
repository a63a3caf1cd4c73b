"""BFM landmark projection, the crop -> image mapping and the animated generation preview."""

from __future__ import annotations

import dataclasses

import av
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from emotalker.models.bfm import BFMLandmarks, load_bfm, project_landmarks
from emotalker.tasks.demo.standins.fake_bfm import fake_bfm_arrays, write_fake_bfm
from emotalker.tasks.demo.standins.fake_face_assets import project_template, synthetic_lm3d_68
from emotalker.tasks.features.face_coeffs import _reduce_to_5, align_face, crop_to_image

ZERO_ID = np.zeros(80)


def _zeros(t: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.zeros((t, 64)), np.zeros((t, 3)), np.zeros((t, 3))


def _manual(points: np.ndarray) -> np.ndarray:
    """Independent pinhole projection of camera-frame-free points (K, 3) into the 224 crop, y down."""
    out = []
    for x, y, z in points:
        d = 10.0 - z
        out.append((1015.0 * x / d + 112.0, 223.0 - (1015.0 * y / d + 112.0)))
    return np.array(out)


def _one_vertex(v: tuple[float, float, float]) -> BFMLandmarks:
    return BFMLandmarks(np.array([v], float), np.zeros((1, 3, 80)), np.zeros((1, 3, 64)))


@pytest.fixture
def bfm_file(tmp_path):
    return write_fake_bfm(tmp_path / "BFM" / "BFM_model_front.mat")


def test_load_recentres_and_keeps_keypoint_rows(bfm_file):
    raw = fake_bfm_arrays()
    bfm = load_bfm(bfm_file)
    verts = raw["meanshape"].reshape(-1, 3).astype(np.float64)
    kp = raw["keypoints"].reshape(-1).astype(int) - 1
    np.testing.assert_allclose(bfm.mean, (verts - verts.mean(0))[kp], atol=1e-6)
    np.testing.assert_allclose(bfm.mean, synthetic_lm3d_68(), atol=1e-5)  # offset removed
    np.testing.assert_allclose(bfm.exp_base[5, 1], raw["exBase"][3 * kp[5] + 1], rtol=1e-6)
    np.testing.assert_allclose(bfm.id_base[67, 2], raw["idBase"][3 * kp[67] + 2], rtol=1e-6)
    assert bfm.mean.shape == (68, 3)
    assert bfm.id_base.shape == (68, 3, 80) and bfm.exp_base.shape == (68, 3, 64)


def test_zero_coefficients_project_the_mean_keypoints(bfm_file):
    bfm = load_bfm(bfm_file)
    lm = project_landmarks(bfm, ZERO_ID, *_zeros(2))
    assert lm.shape == (2, 68, 2)
    np.testing.assert_allclose(lm[0], _manual(bfm.mean), atol=1e-3)
    np.testing.assert_allclose(lm[1], lm[0])
    origin = project_landmarks(_one_vertex((0, 0, 0)), ZERO_ID, *_zeros(1))
    np.testing.assert_allclose(origin[0, 0], [112.0, 111.0], atol=1e-5)
    exp, angle, trans = _zeros(1)
    trans[0] = [0.1, 0.2, 0.0]  # x right in the image, y up (rows decrease)
    moved = project_landmarks(_one_vertex((0, 0, 0)), ZERO_ID, exp, angle, trans)
    np.testing.assert_allclose(moved[0, 0], [112 + 10.15, 111 - 20.3], atol=1e-4)


def test_rotation_convention_and_yaw_direction(bfm_file):
    exp, angle, trans = _zeros(1)
    angle[0] = [0.0, 0.3, 0.0]  # +yaw
    nose = project_landmarks(_one_vertex((0, 0, 1)), ZERO_ID, exp, angle, trans)[0, 0]
    np.testing.assert_allclose(nose, [112 + 1015 * np.sin(0.3) / (10 - np.cos(0.3)), 111], atol=1e-4)
    bfm = load_bfm(bfm_file)
    front = project_landmarks(bfm, ZERO_ID, *_zeros(1))[0]
    turned = project_landmarks(bfm, ZERO_ID, exp, angle, trans)[0]
    assert turned[30, 0] > front[30, 0] + 5  # the nose tip (towards the camera) moves image-right
    # and relative to the face outline: the head turns towards image-right (its left cheek widens)
    assert turned[30, 0] - turned[[0, 16], 0].mean() > front[30, 0] - front[[0, 16], 0].mean() + 5
    assert turned[30, 0] - turned[0, 0] > front[30, 0] - front[0, 0]
    # all three angles against scipy's extrinsic x, then y, then z rotation (= Rz @ Ry @ Rx)
    a = np.array([0.2, -0.4, 0.3])
    angle[0] = a
    got = project_landmarks(bfm, ZERO_ID, exp, angle, trans)[0]
    rotated = Rotation.from_euler("xyz", a).apply(bfm.mean)
    np.testing.assert_allclose(got, _manual(rotated), atol=1e-3)


def test_expression_moves_only_through_exbase(bfm_file):
    bfm = load_bfm(bfm_file)
    exp, angle, trans = _zeros(1)
    exp[0, 7] = 2.0
    got = project_landmarks(bfm, ZERO_ID, exp, angle, trans)[0]
    np.testing.assert_allclose(got, _manual(bfm.mean + 2.0 * bfm.exp_base[:, :, 7]), atol=1e-3)
    assert np.abs(got - project_landmarks(bfm, ZERO_ID, *_zeros(1))[0]).max() > 0.01
    no_id = dataclasses.replace(bfm, id_base=np.zeros_like(bfm.id_base))
    np.testing.assert_allclose(project_landmarks(no_id, ZERO_ID, exp, angle, trans)[0], got, atol=1e-5)
    no_exp7 = dataclasses.replace(bfm, exp_base=bfm.exp_base.copy())
    no_exp7.exp_base[:, :, 7] = 0
    np.testing.assert_allclose(
        project_landmarks(no_exp7, ZERO_ID, exp, angle, trans)[0],
        project_landmarks(bfm, ZERO_ID, *_zeros(1))[0],
        atol=1e-5,
    )
    ident = np.zeros(80)
    ident[3] = 1.5
    with_id = project_landmarks(bfm, ident, *_zeros(1))[0]
    np.testing.assert_allclose(with_id, _manual(bfm.mean + 1.5 * bfm.id_base[:, :, 3]), atol=1e-3)


def test_missing_file_and_missing_keys_are_clear(tmp_path):
    missing = tmp_path / "BFM" / "BFM_model_front.mat"
    with pytest.raises(FileNotFoundError) as err:
        load_bfm(missing)
    msg = str(err.value)
    for needle in (str(missing), "face.bfm_path", "01_MorphableModel.mat", "Exp_Pca.bin", "load_mats.py"):
        assert needle in msg
    partial = write_fake_bfm(tmp_path / "partial.mat", drop_keys=("exBase", "keypoints"))
    with pytest.raises(ValueError, match=r"partial\.mat lacks the BFM arrays \['exBase', 'keypoints'\]"):
        load_bfm(partial)
    text = tmp_path / "text.mat"
    text.write_text("not a mat file\n")
    with pytest.raises(ValueError, match="text.mat is not a readable MATLAB"):
        load_bfm(text)


def _face_image(size: int = 320) -> tuple[np.ndarray, np.ndarray]:
    """A textured image and the 68 image landmarks of a frontal face in it."""
    rng = np.random.default_rng(1)
    img = (rng.random((size, size + 40, 3)) * 255).astype(np.uint8)
    lm = project_template(synthetic_lm3d_68(), center=(size * 0.55, size * 0.45), scale=size * 0.3)
    return img, lm


@pytest.mark.parametrize("as_stored", [False, True])
def test_crop_to_image_inverts_align_face(as_stored):
    img, lm = _face_image()
    lm3d_5 = _reduce_to_5(synthetic_lm3d_68())
    _, params, lm_crop = align_face(img, lm, lm3d_5)
    if as_stored:  # the extractor stores trans_params as float32
        params = params.astype(np.float32)
    back = crop_to_image(lm_crop, params)
    # float32-stored params can move align_face's integer crop corner by one crop pixel
    np.testing.assert_allclose(back, lm, atol=1.01 / params[2] if as_stored else 1e-3)
    # any crop point: image -> crop via the same scale/offset as align_face, and back
    pts = np.array([[0.0, 0.0], [112.0, 111.0], [223.0, 223.0], [-10.0, 300.0]])
    again = crop_to_image(pts, params)
    w0, h0, s = params[:3]
    img_to_crop = crop_to_image(np.zeros(2), params)  # crop origin in image pixels
    ratio = np.array([w0 / int(w0 * s), h0 / int(h0 * s)])
    np.testing.assert_allclose(again, img_to_crop + pts * ratio, atol=1e-6)


def test_motion_landmarks_land_on_the_reference_face(bfm_file):
    """Zero motion with the fake BFM (keypoints = the alignment template) lands on the photo's face."""
    from emotalker.tasks.generation.animate import motion_landmarks

    img, lm = _face_image()
    _, params, _ = align_face(img, lm, _reduce_to_5(synthetic_lm3d_68()))
    identity = {"coeffs": np.zeros(257, np.float32), "trans_params": params.astype(np.float32)}
    got = motion_landmarks(load_bfm(bfm_file), np.zeros((3, 70), np.float32), identity)
    assert got.shape == (3, 68, 2)
    face_width = np.ptp(lm[:, 0])
    assert np.linalg.norm(got[0] - lm, axis=1).mean() < 0.05 * face_width


def _reference_panels(path, ref_width: int) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24")[:, :ref_width].astype(np.int16) for f in c.decode(video=0)]


def test_preview_animates_landmarks_only_with_a_bfm(bfm_file, tmp_path):
    from emotalker.tasks.generation.animate import save_outputs

    img, lm = _face_image()
    _, params, _ = align_face(img, lm, _reduce_to_5(synthetic_lm3d_68()))
    identity = {"coeffs": np.zeros(257, np.float32), "trans_params": params.astype(np.float32)}
    t = 10
    motion = np.zeros((t, 70), np.float32)
    phase = np.linspace(0, np.pi, t)
    motion[:, :64] = 3.0 * np.sin(phase)[:, None]  # open/close the expression
    motion[:, 65] = 0.25 * np.sin(phase)  # yaw
    wave = 0.1 * np.sin(np.arange(t * 640) / 16_000 * 2 * np.pi * 220).astype(np.float32)
    ref_width = int(img.shape[1] * 480 / img.shape[0]) - 4  # the reference panel (plot is 480 high)

    out = save_outputs(tmp_path / "with", motion, identity, img, wave, load_bfm(bfm_file))
    panels = _reference_panels(out["preview"], ref_width)
    assert len(panels) == t
    moved = [np.abs(p - panels[0]).mean() for p in panels[1:]]
    assert min(moved[3:6]) > 0.5  # mid-clip frames differ visibly from the first

    out = save_outputs(tmp_path / "without", motion, identity, img, wave)
    panels = _reference_panels(out["preview"], ref_width)
    assert len(panels) == t
    assert max(np.abs(p - panels[0]).mean() for p in panels[1:]) < 0.2
    with av.open(out["preview"]) as c:
        assert len(c.streams.audio) == 1


def test_generate_flow_fails_on_a_missing_bfm_before_loading_models(tmp_path, monkeypatch):
    import cv2
    import soundfile as sf

    import emotalker.flows.generate as gen
    import emotalker.tasks.generation.run as run
    from emotalker.configs.schema import load_config
    from emotalker.tasks.generation.animate import load_preview_bfm

    assert load_preview_bfm(load_config(None, [])) is None
    image, audio = tmp_path / "face.png", tmp_path / "speech.wav"
    cv2.imwrite(str(image), _face_image()[0])
    sf.write(audio, np.zeros(16_000, np.float32), 16_000)

    def no_models(*args, **kwargs):
        raise AssertionError("a model or store was opened before the BFM check")

    opens = ("stored_kmeans", "recorded_kmeans", "identity_coefficients", "audio_features", "load_emotalker")
    for name in opens:
        monkeypatch.setattr(run, name, no_models)
    monkeypatch.setattr(gen, "resolve_config", lambda config, overrides: load_config(config, overrides))
    missing = tmp_path / "BFM" / "BFM_model_front.mat"
    overrides = [f"face.bfm_path={missing}", "device=cpu"]
    with pytest.raises(FileNotFoundError, match="face.bfm_path") as err:
        gen.generate_flow.fn(str(image), str(audio), str(tmp_path / "out"), config=None, overrides=overrides)
    assert str(missing) in str(err.value) and "Deep3DFaceRecon_pytorch" in str(err.value)
    assert not (tmp_path / "out").exists()
