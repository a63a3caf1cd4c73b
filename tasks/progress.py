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


class _PrefectProgress:
    """Mirrors a bar's fraction done into a Prefect progress artifact of the current run (its Artifacts
    tab), in steps of at least ``step_pct`` percent; an unreachable API never stops the work."""

    def __init__(self, bar: Any, desc: str, step_pct: float = 2.0) -> None:
        from prefect.artifacts import create_progress_artifact

        self.bar, self.step_pct = bar, step_pct
        self._n, self._last = 0.0, -step_pct
        self._id: Any = None
        try:
            self._id = create_progress_artifact(progress=0.0, description=desc)
        except Exception as exc:  # noqa: BLE001 - progress display only
            logger.debug("no Prefect progress artifact for %s: %s", desc, exc)

    @property
    def total(self) -> float | None:
        return self.bar.total

    @total.setter
    def total(self, value: float | None) -> None:
        self.bar.total = value

    def update(self, n: float = 1) -> None:
        self.bar.update(n)
        self._n += n
        self._push()

    def set_postfix(self, **kwargs: Any) -> None:
        self.bar.set_postfix(**kwargs)

    def set_postfix_str(self, s: str, refresh: bool = True) -> None:
        self.bar.set_postfix_str(s)

    def _push(self, force: bool = False) -> None:
        if self._id is None or not self.total:
            return
        pct = min(100.0, 100.0 * self._n / self.total)
        if force or pct - self._last >= self.step_pct:
            from prefect.artifacts import update_progress_artifact

            try:
                update_progress_artifact(artifact_id=self._id, progress=pct)
                self._last = pct
            except Exception as exc:  # noqa: BLE001 - progress display only
                logger.debug("progress artifact update failed: %s", exc)
                self._id = None

    def close(self) -> None:
        self._push(force=True)
        self.bar.close()


def _in_prefect_run() -> bool:
    if "prefect" not in sys.modules:  # not running under Prefect: no need to import it
        return False
    from prefect.context import FlowRunContext, TaskRunContext

    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def progress_bar(
    total: float | None, desc: str, unit: str = "it", every_s: float | None = None, artifact: bool = True
) -> Any:
    """A bar with ``update(n)``, ``set_postfix(...)`` and ``close()``: tqdm on a TTY, log lines otherwise
    (every ``every_s`` seconds, default :data:`PLAIN_EVERY_S`); inside a Prefect flow or task run the
    fraction done is also a Prefect progress artifact unless ``artifact`` is False (a caller keeping its
    own)."""
    if sys.stderr.isatty():
        bar: Any = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=False)
    else:
        bar = _PlainProgress(total, desc, unit, PLAIN_EVERY_S if every_s is None else every_s)
    return _PrefectProgress(bar, desc) if artifact and _in_prefect_run() else bar


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
