"""Deep3DFace coefficient extraction on random-initialised models saved in the real file formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
import skimage.data
import torch

from emotalker.models.deep3dface import CheckpointError, ReconNet, load_recon_net
from emotalker.models.motion import coeffs_to_motion
from emotalker.tasks.demo.standins.fake_face_assets import (
    project_template,
    synthetic_lm3d_68,
    write_fake_face_assets,
)
from emotalker.tasks.features.face_coeffs import (
    FaceCoeffExtractor,
    LandmarkDetector,
    NoFaceError,
    align_face,
    extract_5p,
    interpolate_invalid,
    landmarks_from_heatmaps,
    load_lm3d,
)
from emotalker.tasks.media import read_video_frames

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("face_assets")
    return write_fake_face_assets(root / "deep3dface", root / "torch_home")


@pytest.fixture(scope="module")
def recon(assets: dict[str, Path]) -> ReconNet:
    return load_recon_net(assets["checkpoint"])


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skimage.data.astronaut()  # 512 x 512 RGB uint8, a real photo


def _template_landmarks(center=(240.0, 140.0), scale=80.0) -> np.ndarray:
    return project_template(synthetic_lm3d_68(), center, scale)


# ------------------------------------------------------------------------------------------ model


def test_resnet50_keys_and_shapes_follow_torchvision_layout() -> None:
    sd = ReconNet().state_dict()
    backbone = {k[len("backbone.") :]: v.shape for k, v in sd.items() if k.startswith("backbone.")}
    assert len(backbone) == 318  # torchvision resnet50 has 320 entries including fc.weight / fc.bias
    assert not any(k.startswith("fc.") for k in backbone)
    expected = {
        "conv1.weight": (64, 3, 7, 7),
        "bn1.running_var": (64,),
        "layer1.0.downsample.0.weight": (256, 64, 1, 1),
        "layer1.0.downsample.1.weight": (256,),
        "layer2.0.conv2.weight": (128, 128, 3, 3),
        "layer3.5.bn2.running_mean": (256,),
        "layer4.0.downsample.0.weight": (2048, 1024, 1, 1),
        "layer4.2.conv3.weight": (2048, 512, 1, 1),
        "layer4.2.bn3.num_batches_tracked": (),
    }
    for key, shape in expected.items():
        assert tuple(backbone[key]) == shape, key
    heads = [tuple(sd[f"final_layers.{i}.weight"].shape) for i in range(7)]
    assert heads == [(d, 2048, 1, 1) for d in (80, 64, 80, 3, 27, 2, 1)]
    assert sorted(k for k in sd if k.startswith("final_layers.")) == sorted(
        f"final_layers.{i}.{p}" for i in range(7) for p in ("weight", "bias")
    )


def test_recon_net_outputs_257_zero_initialised() -> None:
    net = ReconNet().eval()
    with torch.inference_mode():
        out = net(torch.rand(2, 3, 224, 224))
    assert out.shape == (2, 257)
    assert torch.count_nonzero(out) == 0  # zero-initialised heads: the mean face


def test_load_recon_net_round_trips_weights(assets: dict[str, Path], recon: ReconNet) -> None:
    saved = torch.load(assets["checkpoint"], weights_only=True)
    assert saved["epoch"] == 20
    loaded = recon.state_dict()
    for key, value in saved["net_recon"].items():
        assert torch.equal(loaded[key], value), key
    assert not recon.training
    with torch.inference_mode():
        out = recon(torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0)))
    assert out.shape == (2, 257) and not torch.allclose(out[0], out[1])


def test_load_recon_net_accepts_module_prefix(tmp_path: Path, assets: dict[str, Path]) -> None:
    state = torch.load(assets["checkpoint"], weights_only=True)["net_recon"]
    path = tmp_path / "ddp.pth"
    torch.save({"net_recon": {f"module.{k}": v for k, v in state.items()}}, path)
    net = load_recon_net(path)
    assert torch.equal(net.state_dict()["final_layers.6.bias"], state["final_layers.6.bias"])


def test_bad_checkpoints_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="epoch_20.pth"):
        load_recon_net(tmp_path / "nope.pth")
    no_key = tmp_path / "no_key.pth"
    torch.save({"model": {}, "epoch": 3}, no_key)
    with pytest.raises(CheckpointError, match=r"no 'net_recon'.*'epoch', 'model'"):
        load_recon_net(no_key)
    state = ReconNet().state_dict()
    del state["backbone.layer4.2.conv3.weight"]
    state["backbone.fc.weight"] = torch.zeros(1000, 2048)
    mismatched = tmp_path / "mismatch.pth"
    torch.save({"net_recon": state}, mismatched)
    with pytest.raises(CheckpointError, match=r"layer4\.2\.conv3\.weight.*backbone\.fc\.weight"):
        load_recon_net(mismatched)
    state = ReconNet().state_dict()
    state["final_layers.0.weight"] = torch.zeros(81, 2048, 1, 1)
    wrong_shape = tmp_path / "shape.pth"
    torch.save({"net_recon": state}, wrong_shape)
    with pytest.raises(CheckpointError, match="final_layers.0.weight"):
        load_recon_net(wrong_shape)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pth"):
        load_recon_net(garbage)


# ------------------------------------------------------------------------------------------ alignment


def test_load_lm3d_reduces_to_deep3dface_five_points(assets: dict[str, Path], tmp_path: Path) -> None:
    lm5 = load_lm3d(assets["lm3d_mat"])
    lm68 = synthetic_lm3d_68()
    assert lm5.shape == (5, 3)
    np.testing.assert_allclose(lm5[0], lm68[[36, 39]].mean(0))  # left eye
    np.testing.assert_allclose(lm5[1], lm68[[42, 45]].mean(0))  # right eye
    np.testing.assert_allclose(lm5[2], lm68[30])  # nose tip (1-based 31)
    np.testing.assert_allclose(lm5[3:], lm68[[48, 54]])  # mouth corners
    np.testing.assert_allclose(extract_5p(lm68[:, :2]), lm5[:, :2])
    bad = tmp_path / "bad.mat"
    scipy.io.savemat(str(bad), {"points": np.zeros((68, 3))})
    with pytest.raises(ValueError, match="no 'lm'.*points"):
        load_lm3d(bad)
    with pytest.raises(FileNotFoundError, match="similarity_Lm3D_all"):
        load_lm3d(tmp_path / "missing.mat")


def test_align_face_puts_five_points_on_the_template(assets: dict[str, Path], astronaut: np.ndarray) -> None:
    lm3d = load_lm3d(assets["lm3d_mat"])
    scale = 80.0
    lm = _template_landmarks(scale=scale)
    aligned, trans, lm_crop = align_face(astronaut, lm, lm3d)
    assert aligned.shape == (224, 224, 3) and aligned.dtype == np.float32
    assert 0.0 <= aligned.min() and aligned.max() <= 1.0 and aligned.std() > 0.05
    assert trans.shape == (5,)
    assert trans[:2].tolist() == [512, 512]
    assert trans[2] == pytest.approx(102.0 / scale, rel=1e-6)
    want = np.stack([112 + 102 * lm3d[:, 0], 112 - 102 * lm3d[:, 1]], axis=1)
    np.testing.assert_allclose(extract_5p(lm_crop), want, atol=2.0)
    # the crop shows the photo: the pixel under the nose tip matches the source image
    nx, ny = np.round(lm_crop[30]).astype(int)
    sx, sy = np.round(lm[30]).astype(int)
    src = astronaut[sy - 2 : sy + 3, sx - 2 : sx + 3].mean((0, 1)) / 255
    np.testing.assert_allclose(aligned[ny - 1 : ny + 2, nx - 1 : nx + 2].mean((0, 1)), src, atol=0.08)


def test_align_face_crops_with_pil_bicubic(assets: dict[str, Path], astronaut: np.ndarray) -> None:
    """Deep3DFace's resize_n_crop_img: PIL bicubic resize to (int(w0 s), int(h0 s)), then crop 224."""
    from PIL import Image

    lm3d = load_lm3d(assets["lm3d_mat"])
    for scale in (80.0, 200.0):  # upsampled and downsampled faces (cv2 would switch to INTER_AREA)
        lm = _template_landmarks(scale=scale)
        aligned, trans, _ = align_face(astronaut, lm, lm3d)
        w0, h0, s, tx, ty = trans
        w, h = int(w0 * s), int(h0 * s)
        left = int(w / 2 - 112 + (tx - w0 / 2) * s)
        up = int(h / 2 - 112 + (h0 / 2 - ty) * s)
        pil = Image.fromarray(astronaut).resize((w, h), resample=Image.BICUBIC)
        want = np.asarray(pil.crop((left, up, left + 224, up + 224)), dtype=np.float32) / 255.0
        np.testing.assert_array_equal(aligned, want)


def test_align_face_pads_when_face_leaves_the_frame(assets: dict[str, Path], astronaut: np.ndarray) -> None:
    lm3d = load_lm3d(assets["lm3d_mat"])
    aligned, _, lm_crop = align_face(astronaut, _template_landmarks(center=(20.0, 30.0)), lm3d)
    assert aligned.shape == (224, 224, 3)
    assert np.all(aligned[:40, :40] == 0)  # outside the photo: zero padding
    assert np.abs(extract_5p(lm_crop)[2] - [112 + 102 * lm3d[2, 0], 112 - 102 * lm3d[2, 1]]).max() < 2
    with pytest.raises(ValueError, match="68, 2"):
        align_face(astronaut, np.zeros((5, 2)), lm3d)


# ------------------------------------------------------------------------------------------ extractor


def _clip(astronaut: np.ndarray, t: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Frames of a moving crop of the photo with landmarks that move with the face."""
    frames, lms = [], []
    for i in range(t):
        dx, dy = 6 * i, 3 * i
        frames.append(np.ascontiguousarray(astronaut[dy : dy + 384, dx : dx + 384]))
        lms.append(_template_landmarks(center=(240.0 - dx, 140.0 - dy), scale=70.0 + 3 * i))
    return np.stack(frames), np.stack(lms)


def test_batched_extract_equals_per_frame(assets: dict[str, Path], recon: ReconNet, astronaut) -> None:
    ext = FaceCoeffExtractor(recon, None, load_lm3d(assets["lm3d_mat"]), batch_size=3)
    frames, lms = _clip(astronaut)
    out = ext.extract(frames, landmarks=lms)
    ref = ext.extract_per_frame(frames, landmarks=lms)
    assert out["coeffs"].shape == (4, 257) and out["coeffs"].dtype == np.float32
    assert out["motion"].shape == (4, 70) and out["trans_params"].shape == (4, 5)
    assert out["valid"].all()
    np.testing.assert_array_equal(out["motion"], coeffs_to_motion(out["coeffs"]))
    for key in ("coeffs", "landmarks", "trans_params"):
        np.testing.assert_allclose(out[key], ref[key], rtol=1e-4, atol=1e-5, err_msg=key)
    assert np.abs(np.diff(out["coeffs"], axis=0)).max() > 0  # frames differ -> coefficients differ


def test_missing_face_rules(assets: dict[str, Path], recon: ReconNet, astronaut: np.ndarray) -> None:
    lm3d = load_lm3d(assets["lm3d_mat"])
    frames, lms = _clip(astronaut, t=5)
    full = FaceCoeffExtractor(recon, None, lm3d).extract(frames, landmarks=lms)
    holes = lms.copy()
    holes[[0, 2]] = np.nan
    interp = FaceCoeffExtractor(recon, None, lm3d).extract(frames, landmarks=holes)
    assert interp["valid"].tolist() == [False, True, False, True, True]
    np.testing.assert_allclose(interp["coeffs"][[1, 3, 4]], full["coeffs"][[1, 3, 4]], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(interp["coeffs"][0], interp["coeffs"][1])  # edge copies nearest valid
    np.testing.assert_allclose(
        interp["coeffs"][2], (interp["coeffs"][1] + interp["coeffs"][3]) / 2, atol=1e-6
    )
    np.testing.assert_allclose(interp["landmarks"][2], (lms[1] + lms[3]) / 2, atol=1e-4)
    assert np.isfinite(interp["trans_params"]).all()
    excl = FaceCoeffExtractor(recon, None, lm3d, missing_face="exclude").extract(frames, landmarks=holes)
    assert np.isnan(excl["coeffs"][[0, 2]]).all() and np.isnan(excl["motion"][[0, 2]]).all()
    assert np.isfinite(excl["coeffs"][[1, 3, 4]]).all()
    with pytest.raises(NoFaceError, match="M003_angry_001"):
        FaceCoeffExtractor(recon, None, lm3d).extract(
            frames, landmarks=np.full_like(lms, np.nan), name="M003_angry_001"
        )
    with pytest.raises(ValueError, match="missing_face"):
        FaceCoeffExtractor(recon, None, lm3d, missing_face="drop")


def test_interpolate_invalid_is_linear_with_edge_copy() -> None:
    values = np.array([[0.0], [1.0], [9.0], [9.0], [4.0], [9.0]])
    valid = np.array([False, True, False, False, True, False])
    out = interpolate_invalid(values, valid)
    np.testing.assert_allclose(out[:, 0], [1.0, 1.0, 2.0, 3.0, 4.0, 4.0])
    with pytest.raises(NoFaceError):
        interpolate_invalid(values, np.zeros(6, bool))


def test_extract_rejects_bad_frames(assets: dict[str, Path], recon: ReconNet) -> None:
    ext = FaceCoeffExtractor(recon, None, load_lm3d(assets["lm3d_mat"]))
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        ext.extract(np.zeros((4, 64, 64), np.uint8), landmarks=np.zeros((4, 68, 2)))
    with pytest.raises(ValueError, match="uint8"):
        ext.extract(np.zeros((1, 64, 64, 3), np.float32), landmarks=np.zeros((1, 68, 2)))
    with pytest.raises(ValueError, match="landmark detector"):
        ext.extract(np.zeros((1, 64, 64, 3), np.uint8))


# ------------------------------------------------------------------------------------------ face-alignment


def test_landmark_detector_names_missing_model_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"2DFAN4-11f355bf06\.pth\.tar.*adrianbulat"):
        LandmarkDetector(model_dir=tmp_path)


@pytest.mark.slow
def test_face_alignment_loads_fake_hub_cache(assets: dict[str, Path], astronaut, monkeypatch) -> None:
    import face_alignment

    monkeypatch.setenv("TORCH_HOME", str(assets["torch_home"]))
    fa = face_alignment.FaceAlignment(
        face_alignment.LandmarksType.TWO_D, device="cpu", compile=False, flip_input=False
    )
    img = np.ascontiguousarray(astronaut[::2, ::2])
    preds = fa.get_landmarks_from_image(img)
    assert preds is not None  # the fake detector fires on the coarsest level
    assert all(p.shape == (68, 2) and np.isfinite(p).all() for p in preds)


@pytest.mark.slow
def test_detector_batched_equals_per_frame(assets: dict[str, Path], recon: ReconNet, astronaut) -> None:
    det = LandmarkDetector(device="cpu", batch_size=2, model_dir=assets["fa_dir"], flip_input=False)
    frames = np.stack([astronaut[::2, ::2], astronaut[::2, ::-2]]).copy()
    boxes = det.detect_boxes(frames)
    assert np.isfinite(boxes).all()
    # our batched FAN path agrees with face-alignment's own single-image path
    own = det.fa.get_landmarks_from_image(frames[1], detected_faces=[boxes[1]])
    lms, valid = det.detect(frames)
    assert valid.all() and lms.shape == (2, 68, 2)
    np.testing.assert_allclose(lms[1], own[0], atol=1e-3)
    ext = FaceCoeffExtractor(recon, det, load_lm3d(assets["lm3d_mat"]), batch_size=2)
    boxes_with_gap = np.vstack([boxes, np.full((1, 4), np.nan)])
    three = np.concatenate([frames, frames[:1]])
    out = ext.extract(three, boxes=boxes_with_gap)
    ref = ext.extract_per_frame(three, boxes=boxes_with_gap)
    assert out["valid"].tolist() == [True, True, False]
    np.testing.assert_allclose(out["coeffs"], ref["coeffs"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["landmarks"], ref["landmarks"], atol=1e-3)


@pytest.mark.slow
def test_batched_detectors_equal_face_alignments_frame_by_frame(assets: dict[str, Path], astronaut) -> None:
    """S3FD and the flipped-input FAN on one batch give face-alignment's own one-image results."""
    from emotalker.tasks.adapters.face_alignment import s3fd_detect_batch

    det = LandmarkDetector(device="cpu", batch_size=3, model_dir=assets["fa_dir"], flip_input=True)
    half = np.ascontiguousarray(astronaut[::2, ::2])
    frames = np.stack([half, half[:, ::-1], np.roll(half, 17, axis=1)]).copy()
    batch = s3fd_detect_batch(det.fa.face_detector, torch.from_numpy(frames).permute(0, 3, 1, 2))
    for frame, cands in zip(frames, batch, strict=True):
        own = np.asarray(det.fa.face_detector.detect_from_image(frame.copy())).reshape(-1, 5)
        assert len(own) > 0  # the stand-in detector fires, so the comparison has boxes to compare
        np.testing.assert_allclose(cands, own, rtol=1e-5, atol=1e-4)
    boxes = det.detect_boxes(frames)
    np.testing.assert_allclose(boxes, np.vstack([det.detect_boxes(f[None]) for f in frames]), atol=1e-4)
    lms, valid = det.detect(frames, boxes)
    assert valid.all()
    for i, frame in enumerate(frames):  # the mirrored crops share the batch; upstream runs them apart
        own = det.fa.get_landmarks_from_image(frame, detected_faces=[boxes[i]])
        np.testing.assert_allclose(lms[i], own[0], atol=1e-3)
    assert np.abs(lms[0] - lms[1]).max() > 1  # different frames, different landmarks


def test_heatmap_decoding_equals_face_alignments_get_preds_fromhm() -> None:
    """Our numpy decoding gives upstream's (numba) landmarks exactly, on peaks inside and on the heatmap's
    border (no quarter-pixel nudge there) and on integer boxes, whose exact-integer landmarks upstream's
    pseudo-inverse truncates one pixel low now and then."""
    from face_alignment.utils import get_preds_fromhm

    rng = np.random.default_rng(0)
    n = 400
    hm = rng.random((n, 68, 64, 64), dtype=np.float32) ** 8
    hm[:40, :34, 0, :] += 2  # arg-max on the top row
    hm[40:80, 34:, :, 63] += 2  # and on the right column
    corner = rng.uniform(0, 150, (n, 2))
    side = rng.uniform(40, 200, n)
    boxes = np.column_stack([corner, corner[:, 0] + side, corner[:, 1] + side * rng.uniform(0.9, 1.3, n)])
    boxes[n // 2 :] = np.round(boxes[n // 2 :])
    centers = np.column_stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2])
    centers[:, 1] -= (boxes[:, 3] - boxes[:, 1]) * 0.12
    scales = (boxes[:, 2] - boxes[:, 0] + boxes[:, 3] - boxes[:, 1]) / 195.0
    ours = landmarks_from_heatmaps(hm, centers, scales)
    theirs = np.stack([get_preds_fromhm(hm[k : k + 1], centers[k], scales[k])[1][0] for k in range(n)])
    assert ours.dtype == np.float32 and ours.shape == (n, 68, 2)
    np.testing.assert_array_equal(ours, theirs)
    # the quirk decides pixels: upstream's sub-pixel points through the exact inverse crop transform
    sub = np.stack([get_preds_fromhm(hm[k : k + 1])[0][0] for k in range(n)])
    size = 200.0 * scales[:, None, None]
    exact = (sub * size / 64 + centers[:, None] - size / 2).astype(np.int32)
    assert (exact != ours).any()


def test_detector_dtype_runs_both_networks_in_it_and_auto_never_slows_a_cpu(
    assets: dict[str, Path], astronaut, monkeypatch
) -> None:
    """``eval.detector_dtype``: S3FD and FAN both run in the precision asked for (face-alignment's own
    ``dtype`` for its FAN), boxes and landmarks come back in float64 / float32; ``auto`` is bfloat16 only
    on a CPU with native BF16 (without it bfloat16 convolutions are 2.5-5x slower) and float32 elsewhere."""
    from emotalker.tasks.features import face_coeffs

    det = LandmarkDetector(
        device="cpu", batch_size=2, model_dir=assets["fa_dir"], flip_input=False, dtype="bfloat16"
    )
    for net in (det.fa.face_alignment_net, det.fa.face_detector.face_detector):
        assert {p.dtype for p in net.parameters()} == {torch.bfloat16}
    frames = np.stack([astronaut[::2, ::2], astronaut[::2, ::-2]]).copy()
    boxes = det.detect_boxes(frames)
    lms, valid = det.detect(frames, boxes)
    assert np.isfinite(boxes).all() and valid.all() and lms.dtype == np.float32
    full = LandmarkDetector(device="cpu", batch_size=2, model_dir=assets["fa_dir"], flip_input=False)
    assert {p.dtype for p in full.fa.face_detector.face_detector.parameters()} == {torch.float32}

    monkeypatch.setattr(face_coeffs, "native_bf16_cpu", lambda: True)
    assert face_coeffs.detector_dtype("auto", "cpu") == "bfloat16"
    assert face_coeffs.detector_dtype("auto", "cuda") == "float32"
    monkeypatch.setattr(face_coeffs, "native_bf16_cpu", lambda: False)
    assert face_coeffs.detector_dtype("auto", "cpu") == "float32"
    assert face_coeffs.detector_dtype("bfloat16", "cpu") == "bfloat16"  # asked for: as asked


# ------------------------------------------------------------------------------------------ video


def test_read_video_frames(tmp_path: Path) -> None:
    import av

    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(6):
            img = np.full((48, 64, 3), 40 * i, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    frames, fps = read_video_frames(path)
    assert frames.shape == (6, 48, 64, 3) and frames.dtype == np.uint8
    assert fps == 25.0
    assert abs(int(frames[5].mean()) - 200) < 6
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        read_video_frames(tmp_path / "nope.mp4")
