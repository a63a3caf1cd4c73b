"""Shared setup for flow tests that need trained models: the tiny pipeline up to the three training flows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from emotalker.configs.schema import load_config
from emotalker.tasks.demo.standins.demo_layout import relocated_demo_overrides

CONFIG = "configs/demo.yaml"


def tiny_overrides(root: Path, actors: str = "[M003, W009, M012]") -> list[str]:
    """The demo config, shrunk further and moved under ``root``."""
    return [
        *relocated_demo_overrides(root),
        f"synthetic.actors={actors}",
        "synthetic.emotion_model_steps=0",  # the plumbing tests need no emotion in the stand-in's features
        "synthetic.audio2exp_steps=0",
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
        "eval.render_max_frames=12",  # short renders: the tests check the plumbing, not Sync's value
    ]


def train_tiny_pipeline(root: Path, config: str = CONFIG) -> dict[str, Any]:
    """Demo data -> download -> prepare -> features -> stage 1, lip branch, stage 2 under ``root``.

    Call inside a Prefect test server (the ``prefect_server`` fixture). Returns the overrides, the resolved
    config and every flow's result, so a module-scoped fixture can build on one trained registry.
    """
    from emotalker.flows.demo import demo_data_flow
    from emotalker.flows.featurize import features_flow
    from emotalker.flows.ingest import download_flow, prepare_flow
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


def training_config(root: Path, *overrides: str) -> Any:
    """The demo config with every path under ``root``, on the CPU, and a split of one training clip "a"
    and one validation clip "b": what the training engine's tests train on."""
    import json

    demo = Path(__file__).resolve().parents[3] / CONFIG
    cfg = load_config(
        str(demo),
        [
            f"paths.root={root}",
            f"paths.checkpoints={root}/checkpoints",
            f"mlflow.tracking_uri=sqlite:///{root}/mlflow.db",
            "device=cpu",
            *overrides,
        ],
    )
    split = cfg.paths.resolve("split")
    split.parent.mkdir(parents=True, exist_ok=True)
    split.write_text(json.dumps({"train": ["a"], "val": ["b"], "test": []}))
    return cfg
