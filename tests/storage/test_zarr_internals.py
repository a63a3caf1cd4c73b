"""The one zarr internal the stores use is still in the pinned version (else: loud, naming the adapter)."""

from __future__ import annotations

import pytest

from emotalker.storage import zarr_internals


def test_zarr_still_runs_store_coroutines_on_its_io_loop() -> None:
    zarr_internals.check_internals()

    async def answer() -> int:
        return 42

    assert zarr_internals.run(answer()) == 42


def test_zarr_check_names_the_adapter_when_the_internals_change(monkeypatch) -> None:
    import zarr.core.sync

    monkeypatch.delattr(zarr.core.sync, "sync")
    with pytest.raises(RuntimeError, match=r"sync\(coro\) is gone.*storage\.zarr_internals"):
        zarr_internals.check_internals()
