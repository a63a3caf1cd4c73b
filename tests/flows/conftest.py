"""Fixtures the flow tests share."""

from __future__ import annotations

from typing import Any

import pytest

from emotalker_testkit.pipeline import train_tiny_pipeline


@pytest.fixture(scope="session")
def trained(prefect_server, tmp_path_factory) -> dict[str, Any]:
    """One tiny trained registry (vqvae, lip, transformer by alias) for the generation tests: they only
    read it, so single and batch generation share one training."""
    return train_tiny_pipeline(tmp_path_factory.mktemp("generate"))
