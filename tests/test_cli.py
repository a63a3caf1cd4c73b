"""The command line a new user meets: help for every flow and option, --version, shipped configs."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import pytest
import yaml

from emotalker import __version__
from emotalker.configs.schema import load_config, shipped_configs
from emotalker.flows.cli import FLOWS, build_parser, main
from emotalker_testkit.imports import run_fresh

REPO_PREFECT_YAML = Path(__file__).resolve().parents[1] / "prefect.yaml"


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_top_level_and_run_help_describe_every_flow(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--help"], ["run", "--help"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 0
        out = capsys.readouterr().out
        for name, (_, description) in FLOWS.items():
            lines = [line.strip() for line in out.splitlines()]
            assert any(line.startswith(name + " ") and line.endswith(description) for line in lines), name


def test_every_option_of_every_command_has_help() -> None:
    parser = build_parser()
    commands = _subparsers(parser)
    assert {"run", "config", "generate", "server", "demo", "demo-data", "hubert-check", "score"} <= set(
        commands
    )
    for name, sub in {"emotalker": parser, **commands}.items():
        for action in sub._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help and action.help != argparse.SUPPRESS, (name, action.dest)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"emotalker {__version__}"


def test_configs_resolve_by_name_outside_a_checkout(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)  # no configs/ folder here
    assert main(["config", "--config", "demo", "--set", "train.vqvae.steps=7"]) == 0
    out = capsys.readouterr().out
    assert '"steps": 7' in out and '"name": "demo"' in out
    assert build_parser().parse_args(["run", "prepare"]).config == "paper"
    assert load_config("paper").name == load_config(shipped_configs()["paper"]).name


def test_config_write_copies_the_shipped_yaml_and_keeps_edits_unless_forced(tmp_path, capsys) -> None:
    dest = tmp_path / "my-configs"
    assert main(["config", "--write", str(dest)]) == 0
    written = sorted(p.name for p in dest.iterdir())
    assert written == sorted(p.name for p in shipped_configs().values()) and "paper.yaml" in written
    assert (dest / "demo.yaml").read_text() == shipped_configs()["demo"].read_text()
    # the written file is a working config
    (dest / "demo.yaml").write_text((dest / "demo.yaml").read_text() + "\nseed: 123\n")
    assert load_config(dest / "demo.yaml").seed == 123
    capsys.readouterr()
    assert main(["config", "--write", str(dest)]) == 2
    err = capsys.readouterr().err
    assert "already exist" in err and "--force" in err and len(err.strip().splitlines()) == 1
    assert "seed: 123" in (dest / "demo.yaml").read_text()
    assert main(["config", "--write", str(dest), "--force"]) == 0
    assert "seed: 123" not in (dest / "demo.yaml").read_text()


def test_every_deployment_is_described_and_every_flow_parameter_documented() -> None:
    from prefect.utilities.callables import parameter_schema

    from emotalker.flows.cli import _load

    declared = yaml.safe_load(REPO_PREFECT_YAML.read_text())
    for dep in declared["deployments"]:
        assert len(dep.get("description", "")) > 40, dep["entrypoint"]
    env = declared["definitions"]["work_pool"]["job_variables"]["env"]
    assert env["PREFECT_LOGGING_EXTRA_LOGGERS"] == "emotalker"
    generation = ["emotalker.flows.generate:generate_flow", "emotalker.flows.generate:generate_batch_flow"]
    for target in [*(t for t, _ in FLOWS.values()), *generation]:
        flow = _load(target)
        schema = parameter_schema(flow.fn).model_dump()
        for name, prop in schema["properties"].items():
            assert prop.get("description"), (target, name)


def test_known_harmless_third_party_records_are_dropped_and_others_kept(caplog) -> None:
    from emotalker.flows import runtime

    runtime.configure()
    assert all(why for *_, why in runtime.HARMLESS_LOG_RECORDS + runtime.HARMLESS_WARNINGS)
    with caplog.at_level(logging.WARNING):
        logging.getLogger("mlflow.pytorch").warning("Saving pytorch model by Pickle or CloudPickle ...")
        logging.getLogger("mlflow.utils.requirements_utils").warning(
            "Found torch version (2.13.0+cpu) contains a local version label (+cpu). MLflow logged ..."
        )
        logging.getLogger("mlflow.pytorch").warning("something else went wrong")
    assert [r.getMessage() for r in caplog.records] == ["something else went wrong"]
    assert logging.getLogger("emotalker").getEffectiveLevel() == logging.INFO


def test_the_cli_and_the_audio_freshness_checks_import_no_heavy_library(tmp_path: Path) -> None:
    """A no-op ``emotalker run audio-features`` loads the config, reads the manifest, checks the model
    files and asks every store what is stale: none of that may import torch, sklearn, Dask, MLflow or
    pandas (the work itself imports them when there is some)."""
    from emotalker.storage.manifest import Manifest
    from emotalker.tasks.demo.standins.demo_layout import relocated_demo_overrides

    ov = [*relocated_demo_overrides(tmp_path), "device=auto"]
    cfg = load_config("demo", ov)
    for model in (cfg.audio.emotion_model, cfg.audio.content_model):
        Path(model).mkdir(parents=True, exist_ok=True)
        (Path(model) / "config.json").write_text("{}")
    clip = {"clip_id": "M003_front_angry_level_1_001", "actor": "M003", "view": "front", "emotion": "angry"}
    Manifest(cfg.paths.resolve("manifest")).upsert(
        [{**clip, "level": 1, "sentence": "001", "status": "prepared"}]
    )
    code = (
        "import json, sys\n"
        "from emotalker.flows import cli, featurize, local_server\n"
        "from emotalker.configs.schema import load_config\n"
        "from emotalker.tasks.features.families import families\n"
        "from emotalker.tasks.features.families.hubert import check_audio_assets\n"
        "from emotalker.storage.workspace import Workspace\n"
        "from emotalker.tasks.features.plan import prepared_clips, todo, up_to_date\n"
        "cfg = load_config('demo', json.loads(sys.argv[1]))\n"
        "ws = Workspace.from_paths(cfg.paths)\n"
        "clips = prepared_clips(ws)\n"
        "check_audio_assets(cfg)\n"
        "audio = families('audio')\n"
        "stale = [todo(cfg, f, clips, ws=ws) for f in audio]\n"
        "result = {'fresh': all(up_to_date(cfg, f, clips, ws=ws) for f in audio), 'clips': len(clips)}\n"
    )
    result, heavy = run_fresh(code, [json.dumps(ov)], cwd=tmp_path)
    assert result == {"fresh": False, "clips": 1}
    assert heavy == []


def test_verify_is_refused_where_it_does_nothing(capsys) -> None:
    """``--verify`` is a parameter of the feature flows only (issue 30 case 8): elsewhere it is an error."""
    from emotalker.flows.cli import main

    assert main(["run", "prepare", "--config", "configs/demo.yaml", "--verify"]) == 2
    err = capsys.readouterr().err
    assert "--verify applies to features, face-features, audio-features, not to prepare" in err
    assert err.count("\n") == 1


def test_score_needs_videos_and_name_and_names_a_missing_folder(tmp_path, capsys) -> None:
    args = build_parser().parse_args(["score", "--videos", str(tmp_path), "--name", "Wav2Lip"])
    assert args.videos == tmp_path and args.name == "Wav2Lip" and args.config == "paper"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["score", "--videos", str(tmp_path)])  # --name is required
    missing = tmp_path / "no-such-folder"
    assert main(["score", "--config", "demo", "--videos", str(missing), "--name", "X"]) == 2
    assert str(missing) in capsys.readouterr().err
