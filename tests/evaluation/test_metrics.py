import numpy as np
import pytest
import skimage.data

from emotalker.tasks.evaluation.metrics import cpbd, cpbd_video, f_lmd, lip_l2, m_lmd, ssim_video


def test_lmd_is_translation_invariant_and_matches_a_hand_computed_shift():
    rng = np.random.default_rng(0)
    gt = rng.normal(size=(5, 68, 2)) * 10
    assert f_lmd(gt + np.array([30.0, -7.0]), gt) == pytest.approx(0.0, abs=1e-9)  # mean-centred
    pred = gt.copy()
    pred[:, 48:68, 0] += 3.0  # move the mouth right by 3 px
    # after centring, mouth points move by 3 - 60/68 and the other 48 by -60/68
    shift = 3.0 * 20 / 68
    expected_f = (20 * (3.0 - shift) + 48 * shift) / 68
    assert f_lmd(pred, gt) == pytest.approx(expected_f)
    assert m_lmd(pred, gt) == pytest.approx(3.0 - shift)


def test_lmd_skips_frames_without_landmarks_and_checks_shapes():
    gt = np.zeros((3, 68, 2))
    gt[:, :, 0] = np.arange(68)
    pred = gt.copy()
    pred[1] = np.nan
    pred[2, :, 1] += np.linspace(-1, 1, 68)
    assert f_lmd(pred, gt) == pytest.approx(np.abs(np.linspace(-1, 1, 68)).sum() / (2 * 68))
    with pytest.raises(ValueError, match="68, 2"):
        f_lmd(np.zeros((3, 20, 2)), np.zeros((3, 20, 2)))


def test_lip_l2_uses_only_lip_dimensions():
    gt = np.zeros((4, 70))
    pred = gt.copy()
    pred[:, 6] = 5.0  # expression 6 is not a lip coefficient
    assert lip_l2(pred, gt) == 0.0
    pred[:, 0] = 2.0
    assert lip_l2(pred, gt) == pytest.approx(2.0)


def test_ssim_of_identical_videos_is_one_and_drops_with_noise():
    rng = np.random.default_rng(1)
    ramp = np.linspace(0, 200, 32)[None, :, None, None] + np.zeros((2, 32, 32, 3))
    video = ramp.astype(np.uint8)
    assert ssim_video(video, video) == pytest.approx(1.0)
    noisy = np.clip(video.astype(int) + rng.integers(-60, 60, video.shape), 0, 255).astype(np.uint8)
    assert ssim_video(noisy, video) < 0.9


def _sample_images() -> list[np.ndarray]:
    """Real photographs (scikit-image's samples), RGB uint8, cropped to 256 x 256 as the evaluation does."""
    imgs = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(), skimage.data.rocket()]
    return [np.ascontiguousarray(i[:256, :256]) for i in imgs]


def test_ssim_equals_pytorch_msssim_on_real_images():
    """The authors' eval.py: pytorch_msssim.ssim on [0, 1] RGB tensors, data_range 1 (11 x 11 Gaussian)."""
    import torch
    from pytorch_msssim import ssim
    from scipy.ndimage import gaussian_filter

    real = np.stack(_sample_images())
    gen = np.clip(gaussian_filter(real.astype(float), (0, 1.2, 1.2, 0)) + 6, 0, 255).astype(np.uint8)
    t = lambda v: torch.from_numpy(v).permute(0, 3, 1, 2).float() / 255.0  # noqa: E731
    expected = [float(ssim(t(gen[i : i + 1]), t(real[i : i + 1]), data_range=1.0)) for i in range(len(real))]
    assert ssim_video(gen, real) == pytest.approx(np.mean(expected), abs=1e-6)
    assert 0.3 < ssim_video(gen, real) < 0.99


def test_cpbd_equals_the_cpbd_package_on_real_grayscale_frames():
    """The authors' eval.py: cpbd.compute on the frame's grayscale (0-255)."""
    import sys

    import cv2

    from emotalker.tasks.evaluation.metrics import gray_frame

    cpbd(np.zeros((8, 8)))  # imports the package
    compute = sys.modules["cpbd.compute"].compute
    for img in _sample_images():
        gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        assert np.array_equal(gray_frame(img), gray.astype(np.float64))
        assert cpbd(img) == float(compute(gray.astype(np.float64)))


def test_cpbd_edge_widths_are_the_packages_loop_bit_for_bit():
    """The vectorised edge widths keep the package's quirks: ramps longer than 101 pixels measure 101,
    zero x-gradient counts as 0 degrees, borders get no width, only 0 / +-180 degree edges are measured."""
    import cv2

    from emotalker.tasks.adapters.cpbd import WIDTH_CAP, cpbd_module, edge_widths

    module = cpbd_module()
    from cpbd.octave import sobel

    rng = np.random.default_rng(0)
    ramp = np.tile(np.arange(300.0), (40, 1))
    step = 0.2 * np.arange(300.0) + 50 * (np.arange(300) >= 150)  # a sharp edge on a long rise
    images = [cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float64) for img in _sample_images()]
    images += [
        rng.integers(0, 256, (64, 80)).astype(np.float64),
        ramp,
        ramp[:, ::-1].copy(),
        ramp.T.copy(),  # gradient along y only
        np.tile(step, (40, 1)),
        np.tile(step[::-1], (40, 1)),
        np.zeros((32, 32)),
    ]
    longest = 0.0
    for image in images:
        edges = sobel(image)
        expected = module.marziliano_method(edges, image)
        assert np.array_equal(edge_widths(edges, image), expected)
        longest = max(longest, expected.max())
    assert longest == 2 * (WIDTH_CAP + 1)  # the cap was reached on both sides somewhere


def test_cpbd_falls_with_blur():
    from scipy.ndimage import gaussian_filter

    img = skimage.data.astronaut()
    scores = [
        cpbd(np.clip(gaussian_filter(img.astype(float), (s, s, 0)), 0, 255).astype(np.uint8))
        for s in (0, 1, 2)
    ]
    assert 0.0 <= scores[2] < scores[1] < scores[0] <= 1.0
    video = np.stack([img, gaussian_filter(img, (2, 2, 0))])
    assert cpbd_video(video) == pytest.approx(np.mean([scores[0], cpbd(video[1])]))
