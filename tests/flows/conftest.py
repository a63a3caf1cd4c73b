"""A Prefect test server shared by the flow tests, and a tiny demo config rooted in a temp dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from emotalker.testing.demo_layout import relocated_demo_overrides


@pytest.fixture(scope="session")
def prefect_server():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def tiny_overrides(root: Path, actors: str = "[M003, W009, M012]") -> list[str]:
    """The demo config, shrunk further and moved under ``root``."""
    return [
        *relocated_demo_overrides(root),
        f"synthetic.actors={actors}",
        "synthetic.emotions=[angry, happy, neutral, sad]",
        "synthetic.levels=[1, 3]",
        "data.test_actors=[M003]",
        "data.val_actors=[W009]",
        "dask.n_workers=1",
        "train.vqvae.steps=60",
        "train.vqvae.lr=1e-3",
        "train.vqvae.window=16",
        "train.vqvae.batch_size=16",
        "train.transformer.steps=20",
        "train.transformer.window=16",
        "train.transformer.batch_size=8",
        "train.lip.steps=10",
        "train.lip.window=4",
        "train.lip.batch_size=8",
        "device=cpu",
    ]
