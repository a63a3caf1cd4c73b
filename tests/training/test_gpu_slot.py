"""GPU stages queue on the Prefect global concurrency limit ``gpu`` (no GPU needed: only the slot logic)."""

from __future__ import annotations

import threading
import time

import pytest

from emotalker.tasks.training.engine import GPU_LIMIT, gpu_slot


@pytest.fixture(scope="module")
def prefect_api():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def _limit():
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            return client.read_global_concurrency_limit_by_name(GPU_LIMIT)
        except ObjectNotFound:
            return None


def _hold_concurrently(n: int, slots: int) -> list[tuple[float, float]]:
    spans: list[tuple[float, float]] = []
    errors: list[BaseException] = []

    def stage() -> None:
        try:
            with gpu_slot("cuda:0", slots):
                t0 = time.monotonic()
                time.sleep(0.5)
                spans.append((t0, time.monotonic()))
        except BaseException as exc:  # surfaced in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=stage) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert len(spans) == n
    return sorted(spans)


def test_cpu_training_takes_no_slot(prefect_api):
    with gpu_slot("cpu"):
        pass
    assert _limit() is None


def test_two_cuda_stages_never_hold_the_gpu_at_once(prefect_api):
    spans = _hold_concurrently(2, slots=1)
    assert spans[0][1] <= spans[1][0], spans  # the second started after the first released
    limit = _limit()
    assert limit is not None and limit.limit == 1 and limit.active_slots == 0


def test_existing_limit_is_respected_when_sharing_is_asked(prefect_api):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

    from emotalker.tasks.training.engine import ensure_gpu_limit

    ensure_gpu_limit(1)
    with get_client(sync_client=True) as client:
        client.update_global_concurrency_limit(GPU_LIMIT, GlobalConcurrencyLimitUpdate(limit=2))
    spans = _hold_concurrently(2, slots=2)
    assert spans[1][0] < spans[0][1], spans  # both ran at once
