"""`emotalker` command line: run any flow locally, make demo data, generate from an image and audio."""

from __future__ import annotations

import argparse
import gc
import json
import logging
import shutil
import sys
import traceback
from pathlib import Path
from typing import Any, NoReturn

from emotalker.flows.runtime import env_defaults

# name -> (flow target, one-line description for --help); the import happens only when the flow runs
FLOWS: dict[str, tuple[str, str]] = {
    "demo-data": (
        "emotalker.flows.demo:demo_data_flow",
        "write the synthetic MEAD-shaped archives and stand-in model assets the demo config uses",
    ),
    "download": ("emotalker.flows.ingest:download_flow", "fetch MEAD archives (resumable, checksummed)"),
    "prepare": (
        "emotalker.flows.ingest:prepare_flow",
        "extract archives, resample to 25 fps / 16 kHz, fill the manifest and the split",
    ),
    "features": ("emotalker.flows.featurize:features_flow", "refresh every feature family (face and audio)"),
    "face-features": (
        "emotalker.flows.featurize:face_features_flow",
        "Deep3DFace coefficients, motion and landmarks per clip",
    ),
    "audio-features": (
        "emotalker.flows.featurize:audio_features_flow",
        "HuBERT emotion/content features, k-means tokens and mel windows per clip",
    ),
    "train-vqvae": ("emotalker.flows.train:train_vqvae", "stage 1: motion VQ-VAE with emotion head (Eq. 3)"),
    "train-transformer": (
        "emotalker.flows.train:train_transformer",
        "stage 2: cross-modal Transformer over the stage-1 codebook (Eq. 4-9)",
    ),
    "train-lip": (
        "emotalker.flows.train:train_lip",
        "lip branch: mel + reference -> lip coefficients (Eq. 10)",
    ),
    "evaluate": (
        "emotalker.flows.evaluate:evaluate_flow",
        "generate the test split, compare with Table 1, write the HTML report",
    ),
    "reproduce": ("emotalker.flows.reproduce:reproduce", "every stage in order under one parent MLflow run"),
    "ablate": (
        "emotalker.flows.ablate:ablate_flow",
        "Tables 2-4: each ablation row a nested MLflow run reusing the default run's stages",
    ),
    "demo": ("emotalker.flows.demo:demo_flow", "demo data, then reproduce on it (what `make demo` runs)"),
}
# `emotalker score --videos DIR --name NAME` (not under `run`: it needs the two arguments)
SCORE_FLOW = (
    "emotalker.flows.score:score_flow",
    "score another method's <clip_id>.mp4 videos on the test list with Table 1's protocol",
)


VERIFY_FLOWS = ("features", "face-features", "audio-features")  # flows with a ``verify`` parameter

MODEL_HELP = (
    "registered models to use: current (the newest trained on these data, features and split; default), "
    "a registry alias such as best, or a version number"
)


def _load(target: str) -> Any:
    import importlib

    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def _add_config_args(p: argparse.ArgumentParser, default: str = "paper") -> None:
    p.add_argument(
        "--config",
        default=default,
        help=f"a shipped config by name (paper, demo) or a YAML file path (default: {default})",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set train.vqvae.steps=100 (repeatable)",
    )
    p.add_argument("--debug", action="store_true", help="show Python tracebacks of errors")


def _flow_list() -> str:
    width = max(map(len, FLOWS))
    return "\n".join(f"  {name:<{width}}  {desc}" for name, (_, desc) in FLOWS.items())


def build_parser() -> argparse.ArgumentParser:
    from emotalker import __version__

    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="emotalker",
        description=__doc__,
        formatter_class=fmt,
        epilog=f"flows (emotalker run FLOW):\n{_flow_list()}\n\n"
        "Without PREFECT_API_URL, flows report to a local Prefect server started on first use and kept\n"
        "running for later calls (`emotalker server stop` ends it).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for name in ("demo", "demo-data"):
        p = sub.add_parser(name, help=FLOWS[name][1], description=FLOWS[name][1])
        _add_config_args(p, default="demo")

    run = sub.add_parser(
        "run",
        help="run one flow in-process (the same flows as the Prefect deployments)",
        description="Run one flow in-process (the same flows as the Prefect deployments in prefect.yaml).",
        epilog=f"flows:\n{_flow_list()}",
        formatter_class=fmt,
    )
    run.add_argument("flow", choices=list(FLOWS), metavar="FLOW", help="the flow to run (listed below)")
    _add_config_args(run)
    run.add_argument("--model", default=None, help=f"evaluate only: {MODEL_HELP}")
    run.add_argument(
        "--verify",
        action="store_true",
        help="features, face-features, audio-features only: read every stored clip back and recompute "
        "those whose arrays do not match their checksums",
    )

    show = sub.add_parser(
        "config",
        help="print the resolved config as JSON, or write the shipped YAML files for editing",
        description="Print the resolved config (after --set overrides) as JSON; with --write DIR, copy the "
        "shipped YAML configs into DIR instead, to edit and pass back with --config DIR/<name>.yaml.",
    )
    _add_config_args(show)
    show.add_argument(
        "--write",
        type=Path,
        default=None,
        metavar="DIR",
        help="write the shipped configs (paper.yaml, ...) here",
    )
    show.add_argument("--force", action="store_true", help="with --write: replace files that exist in DIR")

    check = sub.add_parser(
        "hubert-check", help="load the configured HuBERT checkpoints and say whether they share one pass"
    )
    _add_config_args(check)

    gen = sub.add_parser(
        "generate",
        help="animate a face image with speech audio using the trained models (or a job file of them)",
        description="Animate a face image with speech audio: writes video.mp4, motion.npy, motion.mat, "
        "source.mat, coefficients.png and preview.mp4 to --out. With --batch JOBS, every row of a job file "
        "(.csv with columns image, audio, output and optionally emotion_reference, or .jsonl with those "
        "keys) into --out/<output>/ with one model load; a status per row in --out/<jobs>.status.csv, and "
        "a rerun skips the rows already done.",
    )
    _add_config_args(gen)
    gen.add_argument("--image", type=Path, default=None, help="reference face image (jpg/png)")
    gen.add_argument(
        "--audio", type=Path, default=None, help="speech audio (wav, mp3, ...; resampled to 16 kHz)"
    )
    gen.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output directory (created if missing); with --batch the rows' folders and the status file "
        "go here (default: the job file's folder)",
    )
    gen.add_argument(
        "--batch",
        type=Path,
        default=None,
        metavar="JOBS",
        help="a job file (.csv or .jsonl; relative paths relative to it) instead of --image/--audio; "
        "exit status 2 when a row failed",
    )
    gen.add_argument(
        "--overwrite",
        action="store_true",
        help="with --batch: replace output folders this job file did not write (otherwise such a row fails)",
    )
    gen.add_argument(
        "--mode",
        choices=["crop", "full", "still"],
        default=None,
        help="video.mp4: the face crop (crop), pasted back into the photo (full), or with the photo's head "
        "pose (still); default: the config's render.mode",
    )
    gen.add_argument("--model", default="current", help=MODEL_HELP)
    gen.add_argument(
        "--method",
        choices=["emotalker", "sadtalker"],
        default="emotalker",
        help="emotalker: the trained models (default); sadtalker: SadTalker's released ExpNet + PoseVAE "
        "(render.checkpoint or sadtalker.*; pose style and seed: sadtalker.pose_style / sadtalker.seed), "
        "rendered by the same renderer",
    )
    gen.add_argument(
        "--emotion-reference",
        type=Path,
        default=None,
        help="emotional driving frames (a video, or its .npy (T, 70) / .mat coefficients) that stand in "
        "for the image's neutral reference frame by frame (the paper's Table 5 setting)",
    )

    score = sub.add_parser(
        "score",
        help=SCORE_FLOW[1],
        description="Score a folder of another method's test videos (<clip_id>.mp4; MakeItTalk, Wav2Lip, "
        "EAT renders, ...) with Table 1's protocol, training nothing: one row with 95%% intervals beside the "
        "paper's, the protocol card, logged to MLflow. A folder lacking test clips is marked incomplete.",
    )
    _add_config_args(score)
    score.add_argument("--videos", required=True, type=Path, help="folder of <clip_id>.mp4 videos")
    score.add_argument("--name", required=True, help="the method's name in Table 1 (e.g. Wav2Lip)")

    server = sub.add_parser(
        "server",
        help="the local Prefect server the CLI starts when PREFECT_API_URL is unset",
        description="The CLI starts one local Prefect server per PREFECT_HOME on first use (127.0.0.1, "
        "pid file under PREFECT_HOME) and reuses it from later calls.",
    )
    server.add_argument(
        "action", choices=["status", "start", "stop"], help="show, start or stop the local server"
    )
    return parser


def write_configs(dest: Path, force: bool = False) -> list[Path]:
    """Copy the shipped YAML configs into ``dest``; existing files are kept unless ``force``."""
    from emotalker.configs.schema import ConfigError, shipped_configs

    if dest.exists() and not dest.is_dir():
        raise ConfigError(f"--write {dest}: not a directory")
    targets = {src: dest / src.name for src in shipped_configs().values()}
    clash = [str(t) for t in targets.values() if t.exists()]
    if clash and not force:
        raise ConfigError(f"--write: {', '.join(clash)} already exist (add --force to replace)")
    dest.mkdir(parents=True, exist_ok=True)
    for src, target in targets.items():
        shutil.copyfile(src, target)
    return list(targets.values())


def _server(action: str) -> int:
    from emotalker.flows import local_server

    if action == "stop":
        stopped = local_server.stop()
        print(f"stopped the local Prefect server (pid {stopped})" if stopped else "no local Prefect server")
    elif action == "start":
        print(local_server.ensure())
    else:
        info = local_server.running()
        print(json.dumps(info, indent=2) if info else "no local Prefect server")
    return 0


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
    from emotalker.configs.secrets import redact_secrets

    text = redact_secrets(str(exc)).strip() or type(exc).__name__
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def main(argv: list[str] | None = None) -> int:
    """Run a command; an error is one line on stderr (exit 2 for bad input), a traceback only with --debug."""
    args = build_parser().parse_args(argv)
    env_defaults()
    debug = getattr(args, "debug", False)
    try:
        return _dispatch(args)
    except Exception as exc:  # noqa: BLE001 - the CLI's one place that turns errors into exit codes
        if debug:
            traceback.print_exc()
        if isinstance(exc, ValueError | LookupError | OSError):  # config, inputs, data, missing files
            print(f"emotalker: {_one_line(exc)}", file=sys.stderr)
            return 2
        print(
            f"emotalker: internal error ({type(exc).__name__}): {_one_line(exc)}"
            + ("" if debug else "; rerun with --debug for the traceback"),
            file=sys.stderr,
        )
        return 1


def _dispatch(args: argparse.Namespace) -> int:
    from emotalker.configs.schema import load_config

    if args.command == "server":
        return _server(args.action)
    if args.command == "config" and args.write is not None:
        for path in write_configs(args.write, args.force):
            print(path)
        return 0
    cfg = load_config(args.config, args.overrides)
    if args.command == "config":
        from emotalker.configs.secrets import redact_secrets

        print(redact_secrets(json.dumps(cfg.model_dump(mode="json"), indent=2)))
        return 0
    if args.command == "hubert-check":
        from emotalker.tasks.features.hubert import load_hubert, pass_sharing

        a = cfg.audio
        emotion = load_hubert(a.emotion_model, normalization=a.waveform_normalization)
        content = load_hubert(a.content_model, normalization=a.waveform_normalization)
        print(json.dumps(pass_sharing(emotion, content), indent=2))
        return 0
    from emotalker.flows.local_server import api_for_cli

    if args.command == "generate" and args.batch is not None:
        from emotalker.tasks.generation.batch import read_jobs

        given = [
            f"--{n.replace('_', '-')}" for n in ("image", "audio", "emotion_reference") if getattr(args, n)
        ]
        if given:
            raise ValueError(f"generate --batch takes the inputs from the job file, not {', '.join(given)}")
        read_jobs(args.batch)  # a bad job file fails here, before any server starts
        flow = _load("emotalker.flows.generate:generate_batch_flow")
        kwargs = {"jobs": str(args.batch), "out_dir": None if args.out is None else str(args.out)}
        kwargs |= {"mode": args.mode, "model": args.model, "method": args.method, "overwrite": args.overwrite}
    elif args.command == "generate":
        missing = [f"--{n}" for n in ("image", "audio", "out") if getattr(args, n) is None]
        if missing:
            raise ValueError(f"generate needs {', '.join(missing)} (or --batch JOBS)")
        if args.overwrite:
            raise ValueError("--overwrite applies to generate --batch only")
        flow = _load("emotalker.flows.generate:generate_flow")
        kwargs = {"image": str(args.image), "audio": str(args.audio), "out_dir": str(args.out)}
        kwargs |= {"mode": args.mode, "model": args.model, "method": args.method}
        if args.emotion_reference is not None:
            kwargs["emotion_reference"] = str(args.emotion_reference)
    elif args.command == "score":
        if not args.videos.is_dir():  # fail before any server starts
            raise FileNotFoundError(f"--videos {args.videos} is not a directory of <clip_id>.mp4 videos")
        flow = _load(SCORE_FLOW[0])
        kwargs = {"videos": str(args.videos), "name": args.name}
    else:
        name = args.flow if args.command == "run" else args.command
        flow = _load(FLOWS[name][0])
        kwargs = {}
        if getattr(args, "model", None) is not None:
            if name != "evaluate":
                raise ValueError(f"--model applies to evaluate and generate, not to {name}")
            kwargs["model"] = args.model
        if getattr(args, "verify", False):
            if name not in VERIFY_FLOWS:
                raise ValueError(f"--verify applies to {', '.join(VERIFY_FLOWS)}, not to {name}")
            kwargs["verify"] = True
    _console_tracebacks(show=args.debug)
    with api_for_cli():
        result = flow(config=args.config, overrides=args.overrides, **kwargs)
    if args.command == "generate" and args.batch is not None:
        from emotalker.tasks.generation.batch import summary_lines

        print("\n".join(summary_lines(result)))
        return 2 if result["failed"] else 0
    if result is not None:
        print(json.dumps(result, indent=2, default=str))
    return 0


def console() -> NoReturn:
    """The ``emotalker`` command: :func:`main` in a process that ends with its exit status.

    Its objects are frozen out of the garbage collector first: the process ends right after, and the
    interpreter's collections at shutdown would walk every object Prefect, pydantic and zarr built for
    nothing (about 1 s, a fifth of a no-op feature rerun). ``main`` itself leaves the collector alone
    for callers that keep running.
    """
    code = main()
    gc.freeze()
    raise SystemExit(code)


if __name__ == "__main__":
    console()
