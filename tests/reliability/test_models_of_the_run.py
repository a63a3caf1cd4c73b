"""Evaluation uses the models the run trained (issue 18, case 11).

The issue's sequence as the user ran it: ``prefect deployment run 'reproduce/demo'`` (prefect.yaml's
deployment, a process worker) with ``audio.kmeans_k=12``, then again with the demo's K=16. What each run
trained and evaluated is read back from MLflow: the second run's evaluation uses exactly the checkpoints
its training flows produced (stage 1 and the lip branch reused, the transformer retrained on the new
tokens); the registry's ``best`` alias is not moved across token vocabularies (their validation losses are
not comparable), asking for it explicitly is refused with one line naming both fingerprints, and the
default is the newest model trained on these stores.

Kept cheap: 4 clips, a few training steps, one test clip and no renderer (image metrics are skipped;
model selection is what is tested, and the coefficient-space evaluation exercises it).
"""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from emotalker_testkit.deployments import PREFECT, Services, run_deployment
from emotalker_testkit.reliability import CONFIG, tiny_overrides

pytestmark = pytest.mark.slow

STAGES = ("vqvae", "lip", "transformer")


def test_evaluate_uses_the_models_this_run_trained(deployed, tmp_path, capsys):
    from emotalker.flows.cli import main
    from emotalker.flows.demo import demo_data_flow

    steps = ["train.vqvae.steps=8", "train.transformer.steps=8", "train.lip.steps=6"]
    # 4 clips: 2 actors x 2 emotions
    ov = tiny_overrides(tmp_path, "synthetic.levels=[1]", "audio.kmeans_n_init=1", *steps)
    demo_data_flow(CONFIG, ov)
    ov += ["eval.max_clips=1", f"render.checkpoint={tmp_path}/no-renderer.safetensors"]

    services = Services(tmp_path)
    services.start("worker", [PREFECT, "worker", "start", "--pool", "emotalker"], deployed["env"])
    try:
        for overrides in ([*ov, "audio.kmeans_k=12"], ov):  # then the demo's K=16: tokens recomputed
            params = {"config": CONFIG, "overrides": overrides}
            run_deployment("reproduce/demo", params, deployed["env"], deployed["api"], services, timeout=600)
    finally:
        services.stop_all()

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("emotalker-demo").experiment_id
    first, second = client.search_runs([exp], "tags.stage = 'reproduce'", order_by=["attributes.start_time"])

    def evaluated() -> list[tuple[str | None, dict[str, str]]]:
        """(parent run, the registered versions it evaluated) of every evaluate run, oldest first."""
        runs = client.search_runs([exp], "tags.stage = 'evaluate'", order_by=["attributes.start_time"])
        return [
            (r.data.tags.get("mlflow.parentRunId"), {s: r.data.params[f"model.{s}_version"] for s in STAGES})
            for r in runs
        ]

    def trained(parent: str) -> dict[str, str]:
        """The registered versions whose training run is nested under ``parent``."""
        found = {}
        for stage in STAGES:
            for v in client.search_model_versions(f"name = 'emotalker-{stage}'"):
                if client.get_run(v.run_id).data.tags.get("mlflow.parentRunId") == parent:
                    found[stage] = str(v.version)
        return found

    by_first, by_second = trained(first.info.run_id), trained(second.info.run_id)
    assert set(by_first) == set(STAGES)
    assert set(by_second) == {"transformer"}  # same face and mel data: stage 1 and the lip branch reused
    assert evaluated() == [(first.info.run_id, by_first), (second.info.run_id, {**by_first, **by_second})]
    assert by_second["transformer"] != by_first["transformer"]

    best = client.get_model_version_by_alias("emotalker-transformer", "best")
    assert str(best.version) == by_first["transformer"]  # not moved across token vocabularies

    capsys.readouterr()
    args = ["run", "evaluate", "--config", CONFIG, *[x for o in ov for x in ("--set", o)]]
    assert main([*args, "--model", "best"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    [line] = [x for x in err.splitlines() if x.startswith("emotalker:")]
    assert f"emotalker-transformer@best (version {best.version}) was trained on tokens " in line
    assert "but the stores hold tokens " in line
    new = client.get_model_version("emotalker-transformer", by_second["transformer"]).tags["data.tokens"]
    old = best.tags["data.tokens"]
    assert old in line and new in line and old != new

    assert main(args) == 0  # the default: the newest models trained on these stores
    assert evaluated()[2:] == [(None, {**by_first, **by_second})]
