"""`emotalker` command line: run any flow locally, make demo data, generate from an image and audio."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

FLOWS: dict[str, str] = {
    "demo-data": "emotalker.flows.demo:demo_data_flow",
    "download": "emotalker.flows.ingest:download_flow",
    "prepare": "emotalker.flows.ingest:prepare_flow",
    "features": "emotalker.flows.featurize:features_flow",
    "face-features": "emotalker.flows.featurize:face_features_flow",
    "audio-features": "emotalker.flows.featurize:audio_features_flow",
    "train-vqvae": "emotalker.flows.train:train_vqvae",
    "train-transformer": "emotalker.flows.train:train_transformer",
    "train-lip": "emotalker.flows.train:train_lip",
    "evaluate": "emotalker.flows.evaluate:evaluate_flow",
    "reproduce": "emotalker.flows.reproduce:reproduce",
    "demo": "emotalker.flows.demo:demo_flow",
}


def _load(target: str) -> Any:
    import importlib

    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="configs/paper.yaml", help="YAML config (see configs/)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set train.vqvae.steps=100 (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emotalker", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    for name in ("demo", "demo-data"):
        p = sub.add_parser(name, help=f"run the {name} flow")
        _add_config_args(p)
        p.set_defaults(config="configs/demo.yaml")

    run = sub.add_parser("run", help="run one flow in-process (same flows as the Prefect deployments)")
    run.add_argument("flow", choices=sorted(FLOWS))
    _add_config_args(run)

    show = sub.add_parser("config", help="print the resolved config as JSON")
    _add_config_args(show)

    check = sub.add_parser(
        "hubert-check", help="load the configured HuBERT checkpoints and say whether they share one pass"
    )
    _add_config_args(check)

    gen = sub.add_parser("generate", help="animate a face image with speech audio")
    _add_config_args(gen)
    gen.add_argument("--image", required=True, type=Path)
    gen.add_argument("--audio", required=True, type=Path)
    gen.add_argument("--out", required=True, type=Path)
    gen.add_argument("--emotion-reference", type=Path, default=None, help="optional reference motion .npy")
    return parser


def _runtime_defaults() -> None:
    """Defaults for in-process runs (the user's environment wins): a patient ephemeral Prefect server on
    busy machines, and no telemetry from a pipeline that usually runs offline."""
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _runtime_defaults()
    from emotalker.configs.schema import ConfigError, load_config

    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as exc:
        print(f"emotalker: {exc}", file=sys.stderr)
        return 2
    if args.command == "config":
        print(json.dumps(cfg.model_dump(mode="json"), indent=2))
        return 0
    if args.command == "hubert-check":
        from emotalker.tasks.features.hubert import HubertModelNotFound, load_hubert, pass_sharing

        try:
            a = cfg.audio
            emotion = load_hubert(a.emotion_model, normalization=a.waveform_normalization)
            content = load_hubert(a.content_model, normalization=a.waveform_normalization)
        except (HubertModelNotFound, ValueError) as exc:
            print(f"emotalker: {exc}", file=sys.stderr)
            return 2
        print(json.dumps(pass_sharing(emotion, content), indent=2))
        return 0
    if args.command == "generate":
        flow = _load("emotalker.flows.generate:generate_flow")
        result = flow(
            config=args.config,
            overrides=args.overrides,
            image=str(args.image),
            audio=str(args.audio),
            out_dir=str(args.out),
        )
        print(json.dumps(result, indent=2, default=str))
        return 0
    name = args.flow if args.command == "run" else args.command
    flow = _load(FLOWS[name])
    result = flow(config=args.config, overrides=args.overrides)
    if result is not None:
        print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
