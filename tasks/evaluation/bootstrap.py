"""Percentile bootstrap intervals over clips, so a metric's gap to the paper can be read against its noise.

Clips are the resampling unit (frames within a clip are not independent). Clips whose metric is NaN or
None (skipped: no face, no edges, missing model) are left out and counted.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class BootstrapInterval:
    """Mean over the clips used, the percentile interval of the resampled means, and the clip counts."""

    mean: float
    low: float
    high: float
    n: int  # clips used
    skipped: int  # clips with a NaN / None value, left out
    confidence: float
    resamples: int
    seed: int

    def as_dict(self) -> dict[str, float | int]:
        """Flat row for a report table or MLflow metrics."""
        return asdict(self)


def bootstrap_interval(
    values: Iterable[float | None],
    confidence: float = 0.95,
    resamples: int = 1000,
    seed: int = 0,
) -> BootstrapInterval:
    """Percentile bootstrap of the mean over clips: ``resamples`` draws of n clips with replacement
    (``numpy.random.default_rng(seed)``, so a seed always gives the same interval), interval = the
    (1 - confidence) / 2 and (1 + confidence) / 2 quantiles of the resampled means. One clip gives a
    zero-width interval; none gives NaNs."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    raw = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    kept = raw[np.isfinite(raw)]
    n, skipped = int(kept.size), int(raw.size - kept.size)
    if n == 0:
        nan = float("nan")
        return BootstrapInterval(nan, nan, nan, 0, skipped, confidence, resamples, seed)
    rng = np.random.default_rng(seed)
    means = kept[rng.integers(0, n, size=(resamples, n))].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return BootstrapInterval(
        float(kept.mean()), float(low), float(high), n, skipped, confidence, resamples, seed
    )
