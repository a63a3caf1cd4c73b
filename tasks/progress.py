"""Progress for long steps: a tqdm bar on a terminal, plain periodic log lines otherwise.

Every long loop (download bytes, prepared clips, feature chunks, training steps, evaluated clips, rendered
frames) goes through :func:`progress`, so a researcher sees the same progress in a terminal, in a CI log
and (through the project's loggers) in the Prefect UI.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from tqdm import tqdm

T = TypeVar("T")
logger = logging.getLogger("emotalker.progress")

# seconds between plain lines when stderr is not a terminal
PLAIN_EVERY_S = 10.0


class _PlainProgress:
    """tqdm's update/set_postfix/close surface, printing one log line at most every ``every_s`` seconds."""

    def __init__(self, total: float | None, desc: str, unit: str, every_s: float) -> None:
        self.total, self.desc, self.unit, self.every_s = total, desc, unit, every_s
        self.n: float = 0
        self.postfix = ""
        self._t0 = self._last = time.monotonic()

    def update(self, n: float = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last >= self.every_s or (self.total is not None and self.n >= self.total):
            self._last = now
            self._emit(now)

    def set_postfix_str(self, s: str, refresh: bool = True) -> None:
        self.postfix = s

    def set_postfix(self, **kwargs: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in kwargs.items())

    def _emit(self, now: float) -> None:
        elapsed = now - self._t0
        rate = self.n / elapsed if elapsed > 0 else 0.0
        done = f"{self.n:g}/{self.total:g}" if self.total else f"{self.n:g}"
        eta = ""
        if self.total and rate > 0 and self.n < self.total:
            eta = f", ETA {(self.total - self.n) / rate:.0f} s"
        extra = f" ({self.postfix})" if self.postfix else ""
        logger.info("%s: %s %s, %.2f %s/s%s%s", self.desc, done, self.unit, rate, self.unit, eta, extra)

    def close(self) -> None:
        if self.n and (self.total is None or self.n < self.total):
            self._emit(time.monotonic())

    def __enter__(self) -> _PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress_bar(total: float | None, desc: str, unit: str = "it", every_s: float | None = None) -> Any:
    """A bar with ``update(n)``, ``set_postfix(...)`` and ``close()``: tqdm on a TTY, log lines otherwise
    (every ``every_s`` seconds, default :data:`PLAIN_EVERY_S`)."""
    if sys.stderr.isatty():
        return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=False)
    return _PlainProgress(total, desc, unit, PLAIN_EVERY_S if every_s is None else every_s)


def progress(
    iterable: Iterable[T], total: float | None = None, desc: str = "", unit: str = "it"
) -> Iterator[T]:
    """Iterate ``iterable`` with a :func:`progress_bar` (``total`` defaults to ``len(iterable)``)."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    bar = progress_bar(total, desc, unit)
    try:
        for item in iterable:
            yield item
            bar.update(1)
    finally:
        bar.close()
