"""zarr (pinned 3.1.6): the one non-public function the stores use, behind a check that names this module.

Committing a clip writes its objects straight through the store (one PUT each, group metadata last) and
reading one opens its group from a single metadata object; both are coroutines on zarr's own I/O event
loop, which zarr's synchronous API drives with ``zarr.core.sync.sync``. zarr exports no public runner
for it, so ``run`` is the only place that imports it, and ``check_internals`` (run by the tests) fails
loudly when a zarr upgrade moves it.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable, Coroutine
from typing import Any

SYNC_MODULE = "zarr.core.sync"


def check_internals() -> Callable[..., Any]:
    """zarr's coroutine runner; raises naming this module when it is not where (or what) it was."""
    import zarr

    fn = getattr(importlib.import_module(SYNC_MODULE), "sync", None)
    if not callable(fn) or next(iter(inspect.signature(fn).parameters), None) != "coro":
        raise RuntimeError(
            f"zarr {zarr.__version__}: {SYNC_MODULE}.sync(coro) is gone; update {__name__} for this version"
        )
    return fn


@functools.cache
def _runner() -> Callable[..., Any]:
    return check_internals()


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine of zarr's async store API on zarr's I/O loop and return its result."""
    return _runner()(coro)
