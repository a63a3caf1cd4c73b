"""Shared setup for flow tests that need trained models: the tiny pipeline up to the three training flows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from emotalker.config import load_config

from .conftest import tiny_overrides

CONFIG = "configs/demo.yaml"


def train_tiny_pipeline(root: Path, config: str = CONFIG) -> dict[str, Any]:
    """Demo data -> download -> prepare -> features -> stage 1, lip branch, stage 2 under ``root``.

    Call inside a Prefect test server (the ``prefect_server`` fixture). Returns the overrides, the resolved
    config and every flow's result, so a module-scoped fixture can build on one trained registry.
    """
    from emotalker.flows.data import download_flow, prepare_flow
    from emotalker.flows.demo import demo_data_flow
    from emotalker.flows.features import features_flow
    from emotalker.flows.train import train_lip, train_transformer, train_vqvae

    ov = tiny_overrides(root)
    out: dict[str, Any] = {"root": root, "overrides": ov, "cfg": load_config(config, ov)}
    out["demo"] = demo_data_flow(config, ov)
    out["download"] = download_flow(config, ov)
    out["prepare"] = prepare_flow(config, ov)
    out["features"] = features_flow(config, ov)
    out["vqvae"] = train_vqvae(config, ov)
    out["lip"] = train_lip(config, ov)
    out["transformer"] = train_transformer(config, ov)
    return out
