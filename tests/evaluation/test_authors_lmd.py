import numpy as np
import pytest

from emotalker.tasks.evaluation.metrics import MOUTH, authors_f_lmd, authors_lmd, authors_m_lmd, f_lmd


def test_hand_computed_mean_absolute_coordinate_difference():
    gt = np.zeros((2, 68, 2))
    pred = gt.copy()
    pred[0, 0] = (2.0, -4.0)  # face only: |2| + |-4|
    pred[1, 50] = (3.0, 4.0)  # a mouth point: |3| + |4|, not the Euclidean 5
    assert authors_f_lmd(pred, gt) == pytest.approx((2 + 4 + 3 + 4) / (2 * 68 * 2))
    assert authors_m_lmd(pred, gt) == pytest.approx((3 + 4) / (2 * 20 * 2))
    assert authors_lmd(pred, gt, MOUTH) == authors_m_lmd(pred, gt)
    assert authors_f_lmd(gt, pred) == authors_f_lmd(pred, gt)


def test_a_translated_face_counts_for_the_authors_but_not_for_the_centred_lmd():
    gt = np.random.default_rng(0).normal(size=(4, 68, 2)) * 20 + 128
    moved = gt + np.array([3.0, -1.0])
    assert authors_f_lmd(moved, gt) == pytest.approx((3.0 + 1.0) / 2)
    assert authors_m_lmd(moved, gt) == pytest.approx(2.0)
    assert f_lmd(moved, gt) == pytest.approx(0.0, abs=1e-9)  # EAT's LMD centres each frame


def test_frames_without_landmarks_are_skipped_and_shapes_checked():
    gt = np.zeros((3, 68, 2))
    pred = np.ones((3, 68, 2))
    pred[1] = np.nan
    assert authors_f_lmd(pred, gt) == pytest.approx(1.0)
    assert np.isnan(authors_f_lmd(np.full((1, 68, 2), np.nan), np.zeros((1, 68, 2))))
    with pytest.raises(ValueError, match="68, 2"):
        authors_f_lmd(np.zeros((3, 20, 2)), np.zeros((3, 20, 2)))
