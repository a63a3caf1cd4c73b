import numpy as np
import pytest

from emotalker.tasks.evaluation.bootstrap import bootstrap_interval


def test_interval_brackets_the_mean_and_narrows_with_more_clips():
    rng = np.random.default_rng(1)
    few = bootstrap_interval(rng.normal(4.3, 1.0, 20))
    many = bootstrap_interval(rng.normal(4.3, 1.0, 500))
    assert few.low < few.mean < few.high and many.low < many.mean < many.high
    assert (many.high - many.low) < 0.5 * (few.high - few.low)  # ~ 1 / sqrt(n): 5x narrower here
    assert many.n == 500 and many.skipped == 0 and many.resamples == 1000 and many.confidence == 0.95


def test_same_seed_same_interval_other_seed_other_interval():
    values = np.random.default_rng(2).exponential(size=40)
    assert bootstrap_interval(values, seed=7) == bootstrap_interval(values, seed=7)
    assert bootstrap_interval(values, seed=7) != bootstrap_interval(values, seed=8)


def test_constant_metric_has_zero_width():
    ci = bootstrap_interval([0.1] * 37)
    assert ci.high - ci.low == 0.0
    assert ci.mean == pytest.approx(0.1) and ci.low == pytest.approx(0.1)


def test_nan_and_none_clips_are_left_out_and_counted():
    ci = bootstrap_interval([1.0, float("nan"), 3.0, None, 2.0])
    assert (ci.n, ci.skipped) == (3, 2) and ci.mean == pytest.approx(2.0)
    assert 1.0 <= ci.low <= ci.high <= 3.0
    empty = bootstrap_interval([None, float("nan")])
    assert (empty.n, empty.skipped) == (0, 2) and np.isnan(empty.mean) and np.isnan(empty.low)
    one = bootstrap_interval([0.4])
    assert (one.mean, one.low, one.high) == (0.4, 0.4, 0.4)
    assert set(one.as_dict()) == {"mean", "low", "high", "n", "skipped", "confidence", "resamples", "seed"}


def test_bad_arguments_fail():
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_interval([1.0], confidence=95)
    with pytest.raises(ValueError, match="resamples"):
        bootstrap_interval([1.0], resamples=0)
