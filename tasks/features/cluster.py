"""Dask client for the feature flows and the evaluation's clips: a loopback LocalCluster, or an existing
scheduler by address."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from emotalker.configs.schema import DaskConfig

if TYPE_CHECKING:
    from distributed import Client


@contextmanager
def dask_client(cfg: DaskConfig, resources: dict[str, float] | None = None) -> Iterator[Client]:
    """Yield a client; a cluster this function started is closed on exit, an external one is left running.

    ``resources`` (``{"GPU": 1}``): what each worker of a local cluster offers, so tasks that ask for it
    run there; an external cluster's workers declare theirs when started (``dask worker --resources``).

    ``cfg.address`` (``tcp://host:8786``) connects to a running ``dask scheduler`` (dask-jobqueue,
    Kubernetes, ...); otherwise workers are local processes bound to 127.0.0.1 with no public dashboard.
    Dask is imported here, not at module import: a no-op feature rerun never pays for it.
    """
    from distributed import Client, LocalCluster

    if cfg.address:
        client = Client(cfg.address, timeout="30s")
        try:
            yield client
        finally:
            client.close()
        return
    cluster = LocalCluster(
        n_workers=cfg.n_workers,
        threads_per_worker=cfg.threads_per_worker,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        silence_logs=40,
        resources=resources,
    )
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()
