"""`emotalker` command line: run any flow locally, make demo data, generate from an image and audio."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
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
    p.add_argument("--debug", action="store_true", help="show Python tracebacks of errors")


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


class _NoTraceback(logging.Formatter):
    """Wraps a console handler's formatter: the log line stays, its traceback goes (``--debug`` keeps it)."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info = record.exc_text = record.stack_info = None
        try:
            return self.inner.format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved


def _console_tracebacks(show: bool) -> None:
    """Prefect logs a failed run's traceback to the console; without ``--debug`` the CLI drops it there and
    prints the error once, as one line. Call after Prefect is imported (it sets up its handlers then)."""
    loggers = [logging.getLogger(), *(logging.getLogger(n) for n in list(logging.Logger.manager.loggerDict))]
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            file = isinstance(handler, logging.FileHandler)
            console = isinstance(handler, logging.StreamHandler) and not file
            wrapped = isinstance(handler.formatter, _NoTraceback)
            if console and show and wrapped:
                handler.setFormatter(handler.formatter.inner)
            elif console and not show and not wrapped:
                handler.setFormatter(_NoTraceback(handler.formatter))


def _one_line(exc: BaseException) -> str:
    from emotalker.configs.schema import redact_secrets

    text = redact_secrets(str(exc)).strip() or type(exc).__name__
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def main(argv: list[str] | None = None) -> int:
    """Run a command; an error is one line on stderr (exit 2 for bad input), a traceback only with --debug."""
    args = build_parser().parse_args(argv)
    _runtime_defaults()
    try:
        return _dispatch(args)
    except Exception as exc:  # noqa: BLE001 - the CLI's one place that turns errors into exit codes
        if args.debug:
            traceback.print_exc()
        if isinstance(exc, ValueError | LookupError | OSError):  # config, inputs, data, missing files
            print(f"emotalker: {_one_line(exc)}", file=sys.stderr)
            return 2
        print(
            f"emotalker: internal error ({type(exc).__name__}): {_one_line(exc)}"
            + ("" if args.debug else "; rerun with --debug for the traceback"),
            file=sys.stderr,
        )
        return 1


def _dispatch(args: argparse.Namespace) -> int:
    from emotalker.configs.schema import load_config

    cfg = load_config(args.config, args.overrides)
    if args.command == "config":
        from emotalker.configs.schema import redact_secrets

        print(redact_secrets(json.dumps(cfg.model_dump(mode="json"), indent=2)))
        return 0
    if args.command == "hubert-check":
        from emotalker.tasks.features.hubert import load_hubert, pass_sharing

        a = cfg.audio
        emotion = load_hubert(a.emotion_model, normalization=a.waveform_normalization)
        content = load_hubert(a.content_model, normalization=a.waveform_normalization)
        print(json.dumps(pass_sharing(emotion, content), indent=2))
        return 0
    if args.command == "generate":
        flow = _load("emotalker.flows.generate:generate_flow")
        _console_tracebacks(show=args.debug)
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
    _console_tracebacks(show=args.debug)
    result = flow(config=args.config, overrides=args.overrides)
    if result is not None:
        print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
