import numpy as np
import pytest
import skimage.data

from emotalker.tasks.evaluation.metrics import cpbd, cpbd_video, edge_widths, f_lmd, lip_l2, m_lmd, ssim_video


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


def _naive_width(row: np.ndarray, c: int, rising: bool) -> int:
    """Walk left and right from column c to the row's local extrema (the Marziliano definition)."""
    sign = 1 if rising else -1
    right = c
    while right + 1 < len(row) and sign * (row[right + 1] - row[right]) > 0:
        right += 1
    left = c
    while left - 1 >= 0 and sign * (row[left] - row[left - 1]) > 0:
        left -= 1
    return right - left


def test_edge_width_of_a_linear_ramp_is_its_length():
    row = np.full(128, 20.0)
    row[50:61] = np.linspace(20, 220, 11)  # 10 rising steps
    row[61:] = 220.0
    widths = edge_widths(np.tile(row, (8, 1)))
    assert widths.any()
    assert set(np.unique(widths[widths > 0])) == {10.0}
    falling = edge_widths(np.tile(row[::-1], (8, 1)))
    assert set(np.unique(falling[falling > 0])) == {10.0}


def test_vectorised_edge_widths_match_a_pixel_walk():
    from scipy.ndimage import gaussian_filter, sobel

    rng = np.random.default_rng(3)
    img = gaussian_filter(rng.uniform(0, 255, (40, 70)), 1.5)
    widths = edge_widths(img)
    gx = sobel(img, axis=1)
    ys, xs = np.nonzero(widths)
    assert len(ys) > 20
    for y, x in zip(ys, xs, strict=True):
        assert widths[y, x] == _naive_width(img[y], x, rising=gx[y, x] > 0)


def test_cpbd_is_one_for_sharp_steps_and_falls_with_blur():
    from scipy.ndimage import gaussian_filter

    x = np.arange(128)
    stripes = np.tile(np.where((x // 16) % 2 == 0, 20.0, 220.0), (128, 1))
    assert cpbd(stripes) == 1.0  # every edge is 1 px wide: far below the just-noticeable width
    assert cpbd(gaussian_filter(stripes, 2)) < 0.5  # ~5 px wide edges exceed the 3 px JNB width
    img = skimage.data.astronaut().astype(np.float64)
    scores = [cpbd(gaussian_filter(img, (s, s, 0))) for s in (0, 1, 2)]
    assert 0.0 <= scores[2] < scores[1] < scores[0] <= 1.0
    assert np.isnan(cpbd(np.full((128, 128), 90.0)))  # no edge block
    video = np.stack([skimage.data.astronaut(), np.full((512, 512, 3), 90, np.uint8)])
    assert cpbd_video(video) == pytest.approx(scores[0])  # the flat frame is ignored
