"""The evaluation's clips as Dask tasks on the cluster the feature flows use, or in-process.

Each clip's work is one call of a picklable function; on a worker, what it needs (models, renderer) is
built once per worker process by :func:`on_worker` and reused by every later clip there. Results come
back in the clips' order. Clips on a CUDA device ask for one ``GPU`` worker resource, so a cluster of
CPU and GPU machines sends them to the GPU workers only; a local cluster declares one per worker.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from emotalker.configs.schema import DaskConfig
from emotalker.tasks.progress import progress

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")

# per worker process: what on_worker built, by key (the models of one evaluation)
_BUILT: dict[str, Any] = {}


def on_worker(key: str, build: Callable[[], T]) -> T:
    """``build()``'s result, built once per process for ``key`` (e.g. the config's model files and
    versions): a worker loads the models for its first clip and keeps them for the next ones."""
    if key not in _BUILT:
        _BUILT.clear()  # one evaluation's models at a time: a new evaluation frees the last one's
        _BUILT[key] = build()
    return _BUILT[key]


def gpu_resources(device: str) -> dict[str, float] | None:
    """The worker resource a clip on ``device`` asks for: one GPU on CUDA, nothing on CPU."""
    return {"GPU": 1} if str(device).startswith("cuda") else None


def map_clips(
    work: Callable[[T], R],
    items: Sequence[T],
    *,
    dask: DaskConfig | None,
    device: str,
    desc: str = "evaluate",
) -> list[R]:
    """``[work(item) for item in items]``: in this process when ``dask`` is None, else as one Dask task
    per item on ``dask``'s cluster (``dask.address``, or a local cluster of ``dask.n_workers``), gathered
    in the items' order. A failing item fails the map, as in-process."""
    if dask is None:
        return [work(item) for item in progress(items, desc=desc, unit="clip")]
    from distributed import as_completed

    from emotalker.tasks.features.cluster import dask_client

    resources = gpu_resources(device)
    with dask_client(dask, resources=resources) as client:
        futures = [client.submit(work, item, pure=False, resources=resources) for item in items]
        for done, _ in enumerate(as_completed(futures), start=1):
            log.info("%s: %d/%d clips done on Dask", desc, done, len(futures))
        return client.gather(futures)
