"""Training flows end to end on the synthetic set: resume after a kill, fail-fast inputs, the stage-1
alias, learning on the demo settings and what MLflow records (slow, run in CI).

One module fixture prepares the data and features once; every test trains into its own checkpoint
folder and MLflow database under that root, so tests do not see each other's runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient

from emotalker.configs.schema import load_config
from emotalker.storage.split import SplitError
from emotalker.tasks.training.loop import TrainingInputError
from emotalker_testkit.pipeline import tiny_overrides

pytestmark = pytest.mark.slow
CONFIG = str(Path(__file__).resolve().parents[2] / "configs" / "demo.yaml")
# checkpoints often enough that a kill mid-stage has something to resume from
RESUMABLE = [
    "train.vqvae.checkpoint_every=20",
    "train.vqvae.val_every=20",
    "train.vqvae.log_every=10",
    "train.transformer.checkpoint_every=5",
    "train.transformer.val_every=5",
    "train.transformer.log_every=5",
    "train.lip.checkpoint_every=4",
    "train.lip.val_every=4",
    "train.lip.log_every=2",
]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """Prefect test server + synthetic data, prepared and with every feature family, once per module."""
    from prefect.testing.utilities import prefect_test_harness

    from emotalker.flows.demo import demo_data_flow
    from emotalker.flows.featurize import features_flow
    from emotalker.flows.ingest import download_flow, prepare_flow

    root = tmp_path_factory.mktemp("train-flows")
    ov = tiny_overrides(root)
    with prefect_test_harness(server_startup_timeout=120), pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # anything written relative to the working directory stays in the temp dir
        demo_data_flow(CONFIG, ov)
        download_flow(CONFIG, ov)
        prepare_flow(CONFIG, ov)
        features_flow(CONFIG, ov)
        yield root


def stage_overrides(root: Path, name: str, *extra: str, train_settings: bool = True) -> list[str]:
    """The tiny config with its own checkpoints and MLflow database under ``root/name``."""
    base = tiny_overrides(root)
    if not train_settings:
        base = [o for o in base if not o.startswith("train.")]
    sub = root / name
    return [
        *base,
        f"paths.checkpoints={sub}/checkpoints",
        f"mlflow.tracking_uri=sqlite:///{sub}/mlflow.db",
        *extra,
    ]


def client_for(ov: list[str]) -> MlflowClient:
    uri = load_config(CONFIG, ov).mlflow.tracking_uri
    mlflow.set_tracking_uri(uri)
    return MlflowClient(uri)


def all_runs(ov: list[str]) -> list[Any]:
    client = client_for(ov)
    exps = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(exps) if exps else []


def state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def assert_same_weights(a: Path, b: Path) -> None:
    sa, sb = state(a), state(b)
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), f"{a.name}: {k} differs"


@pytest.fixture(scope="module")
def uninterrupted(data_root):
    """The three stages trained without interruption (reference for the resume test)."""
    from emotalker.flows.train import train_lip, train_transformer, train_vqvae

    ov = stage_overrides(data_root, "ref", *RESUMABLE)
    return {
        "overrides": ov,
        "vqvae": train_vqvae(CONFIG, ov),
        "lip": train_lip(CONFIG, ov),
        "transformer": train_transformer(CONFIG, ov),
    }


def test_killed_stages_resume_into_the_same_run_and_match_an_uninterrupted_run(data_root, uninterrupted):
    from emotalker.flows.train import train_lip, train_transformer, train_vqvae

    ov = stage_overrides(data_root, "killed", *RESUMABLE)
    client = client_for(ov)
    # stop mid-way between checkpoints, so the resumed run replays steps after the last checkpoint
    for stage, flow_fn, stop in (
        ("vqvae", train_vqvae, 27),
        ("lip", train_lip, 6),
        ("transformer", train_transformer, 7),
    ):
        killed = flow_fn(CONFIG, ov, stop_after=stop)
        assert killed["status"] == "interrupted" and killed["steps"] == stop
        ref = uninterrupted[stage]
        d = Path(ref["checkpoint_dir"].replace(f"{data_root}/ref/", f"{data_root}/killed/"))
        assert (d / "last.pt").exists() and not (d / "done.json").exists()
        run_id = json.loads((d / "run.json").read_text())["run_id"]
        assert killed["run_id"] == run_id
        saved_step = torch.load(d / "last.pt", map_location="cpu", weights_only=True)["step"]
        assert 0 < saved_step < stop

        resumed = flow_fn(CONFIG, ov)
        assert resumed["resumed_from"] == saved_step and resumed["steps"] == ref["steps"]
        assert resumed["run_id"] == run_id != ref["run_id"]
        assert resumed["checkpoint_dir"] == str(d)
        for name in ("best.pt", "last.pt"):
            assert_same_weights(d / name, Path(ref["checkpoint_dir"]) / name)
        assert resumed["best_metric"] == ref["best_metric"] and resumed["best_step"] == ref["best_step"]
        same = {k: v for k, v in ref["final"].items() if k != "steps_per_s"}
        assert {k: resumed["final"][k] for k in same} == same
        # one MLflow run per stage, finished, with the train curve reaching the last step
        runs = [r for r in all_runs(ov) if r.data.tags.get("stage") == stage]
        assert [r.info.run_id for r in runs] == [run_id]
        assert runs[0].info.status == "FINISHED"
        # even a stage shorter than MLflow's sampling interval records a system sample
        assert "system/cpu_utilization_percentage" in runs[0].data.metrics
        steps = {m.step for m in client.get_metric_history(run_id, "train/loss")}
        assert max(steps) == ref["steps"] and min(steps) <= saved_step
        # a finished stage reruns as a no-op
        assert flow_fn(CONFIG, ov)["skipped"] is True


def _assert_failed_before_training(ov: list[str], stage: str, runs_before: int = 0) -> None:
    cfg = load_config(CONFIG, ov)
    assert not (cfg.paths.resolve("checkpoints") / stage).exists()
    assert len(all_runs(ov)) == runs_before


@pytest.mark.parametrize(
    ("name", "extra", "error", "match"),
    [
        ("nosplit", ["paths.split={sub}/missing-split.json"], SplitError, "split file .* not found"),
        (
            "nofeatures",
            ["paths.features={sub}/features"],
            TrainingInputError,
            "has no clips: run the features",
        ),
        ("emptysplit", ["paths.split={sub}/split.json"], TrainingInputError, "train split has no clip"),
        ("badwidth", ["vqvae.in_dim=60"], TrainingInputError, "vqvae.in_dim must be 57"),
    ],
)
def test_bad_inputs_fail_fast_before_training(data_root, name, extra, error, match):
    from emotalker.flows.train import train_vqvae

    sub = data_root / name
    sub.mkdir()
    if name == "emptysplit":  # train actor whose clips have no features
        split = json.loads((data_root / "split.json").read_text())
        split["train"] = ["M099_front_angry_level_1_001"]
        split["actors"]["train"] = ["M099"]
        (sub / "split.json").write_text(json.dumps(split))
    ov = stage_overrides(data_root, name, *(e.format(sub=sub) for e in extra))
    with pytest.raises(error, match=match):
        train_vqvae(CONFIG, ov)
    _assert_failed_before_training(ov, "vqvae")


def test_transformer_fails_fast_on_audio_width_mismatch(data_root, uninterrupted):
    from emotalker.flows.train import train_transformer

    ref = uninterrupted["overrides"]
    runs = len(all_runs(ref))
    ov = [*ref, f"paths.checkpoints={data_root}/badaudio/checkpoints", "transformer.audio_dim=48"]
    with pytest.raises(TrainingInputError, match="width 32 but the config expects 48"):
        train_transformer(CONFIG, ov)
    _assert_failed_before_training(ov, "transformer", runs)


def test_stage2_needs_the_stage1_alias_and_the_alias_follows_the_best_vqvae(data_root):
    from emotalker.flows.train import train_transformer, train_vqvae

    ov = stage_overrides(data_root, "alias")
    with pytest.raises(LookupError, match=r"(no MLflow database|no version of emotalker-vqvae).* train"):
        train_transformer(CONFIG, ov)
    _assert_failed_before_training(ov, "transformer")

    first = train_vqvae(CONFIG, [*ov, "train.vqvae.steps=3"])
    second = train_vqvae(CONFIG, ov)  # 60 steps: a different fingerprint, a second version
    assert first["registered"]["alias_moved"] is True  # the first version always takes the alias
    assert second["registered"]["alias_moved"] == (second["best_metric"] < first["best_metric"])
    client = client_for(ov)
    versions = client.search_model_versions("name='emotalker-vqvae'")
    assert len(versions) == 2
    best = min(versions, key=lambda v: float(v.tags["val_metric"]))
    alias = client.get_model_version_by_alias("emotalker-vqvae", "best")
    assert alias.version == best.version
    assert first["best_metric"] != second["best_metric"]

    out = train_transformer(CONFIG, ov)
    run = client.get_run(out["run_id"])
    from emotalker.storage.workspace import Workspace
    from emotalker.tasks.training.vqvae import load_vqvae

    cfg = load_config(CONFIG, ov)
    _, _, sha = load_vqvae(cfg, ws=Workspace.from_paths(cfg.paths))  # the newest trained on these stores
    assert run.data.params["vqvae.weights_sha"] == sha


@pytest.fixture(scope="module")
def demo_vqvae(data_root):
    """Stage 1 with configs/demo.yaml's training settings (300 steps) on the tiny synthetic set."""
    from emotalker.flows.train import train_vqvae

    ov = stage_overrides(data_root, "demo", train_settings=False)
    return ov, train_vqvae(CONFIG, ov)


def test_demo_settings_show_learning(data_root, demo_vqvae):
    ov, out = demo_vqvae
    cfg = load_config(CONFIG, ov)
    assert cfg.train.vqvae.steps == 300 and out["steps"] == 300
    final = out["final"]
    assert final["val/recon_mse"] < 0.3 * final["val/mean_pose_mse"]
    chance = 1 / len(cfg.synthetic.emotions)
    assert final["val/emotion_acc"] > chance + 0.1, final["val/emotion_acc"]


def test_mlflow_run_records_metrics_artifacts_and_system_metrics(demo_vqvae):
    ov, out = demo_vqvae
    client = client_for(ov)
    run = client.get_run(out["run_id"])
    metrics = run.data.metrics
    for key in (
        "train/loss",
        "train/loss_recon",
        "train/loss_commit",
        "train/loss_emotion",
        "train/perplexity",
        "train/usage",
        "train/emotion_acc",
        "lr",
        "val/recon_mse",
        "val/mean_pose_mse",
        "val/perplexity",
        "val/usage",
        "val/emotion_acc",
        "codebook/used_codes",
        "best/val_metric",
    ):
        assert key in metrics, key
    history = client.get_metric_history(out["run_id"], "train/loss_recon")
    assert len(history) == 300 // 20  # log_every=20 in configs/demo.yaml: one point per logging step
    assert [m.step for m in history] == sorted(m.step for m in history)
    assert any(k.startswith("system/cpu_utilization") for k in metrics), sorted(metrics)
    assert run.data.params["train.vqvae.steps"] == "300"
    arts = {a.path for a in client.list_artifacts(out["run_id"])}
    assert {"config", "split", "plots", "checkpoint"} <= arts
    # the pytorch model is a logged model of this run (MLflow 3 keeps it outside the run's artifacts)
    logged = mlflow.search_logged_models(
        filter_string=f"source_run_id = '{out['run_id']}'", output_format="list"
    )
    assert [m.name for m in logged] == ["model"]
    split = json.loads(
        Path(
            mlflow.artifacts.download_artifacts(run_id=out["run_id"], artifact_path="split/split.json")
        ).read_text()
    )
    assert split["actors"]["train"] == ["M012"]
    cfg_art = mlflow.artifacts.download_artifacts(run_id=out["run_id"], artifact_path="config/config.yaml")
    assert "codebook_size: 64" in Path(cfg_art).read_text()
    plots = {a.path for a in client.list_artifacts(out["run_id"], "plots")}
    assert plots == {"plots/loss_curves.png", "plots/codebook_usage.png", "plots/codebook_tsne.png"}
