import numpy as np
import pytest

from emotalker.tasks.metrics import f_lmd, lip_l2, m_lmd, ssim_video


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
