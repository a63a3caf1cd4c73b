"""Evaluation uses the models the run trained (issue 18, case 11).

The issue's sequence, as direct flow calls on the Prefect test server: ``reproduce`` with
``audio.kmeans_k=12``, then ``reproduce`` with the demo's K=16. The second run's evaluation uses exactly
the checkpoints its training flows returned; the registry's ``best`` alias is not moved across data
(the validation losses of K=12 and K=16 token vocabularies are not comparable), and asking for it
explicitly is refused with one line naming both fingerprints.
"""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from emotalker_testkit.reliability import CONFIG, tiny_overrides

pytestmark = pytest.mark.slow


def test_evaluate_uses_the_models_this_run_trained(prefect_server, tmp_path, capsys):
    from emotalker.flows.cli import main
    from emotalker.flows.demo import demo_data_flow
    from emotalker.flows.reproduce import reproduce

    steps = ["train.vqvae.steps=8", "train.transformer.steps=8", "train.lip.steps=6"]
    ov = tiny_overrides(tmp_path, "synthetic.levels=[1]", *steps)  # 4 clips: 2 actors x 2 emotions
    demo_data_flow(CONFIG, ov)
    first = reproduce(CONFIG, [*ov, "audio.kmeans_k=12"])
    second = reproduce(CONFIG, ov)  # the demo's K=16: tokens recomputed, transformer retrained

    def versions(run: dict) -> dict[str, str]:
        return {s: run[f"train_{s}"]["registered"]["version"] for s in ("vqvae", "lip", "transformer")}

    assert first["evaluate"]["models"] == versions(first)
    assert second["evaluate"]["models"] == versions(second)
    assert versions(second)["transformer"] != versions(first)["transformer"]
    assert versions(second)["vqvae"] == versions(first)["vqvae"]  # same face data: stage 1 reused

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    best = client.get_model_version_by_alias("emotalker-transformer", "best")
    assert str(best.version) == versions(first)["transformer"]  # not moved across token vocabularies
    moved = second["train_transformer"]["registered"]["alias_moved"]
    assert moved is False

    capsys.readouterr()
    args = ["run", "evaluate", "--config", CONFIG, *[x for o in ov for x in ("--set", o)]]
    assert main([*args, "--model", "best"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    [line] = [x for x in err.splitlines() if x.startswith("emotalker:")]
    assert f"emotalker-transformer@best (version {best.version}) was trained on tokens " in line
    assert "but the stores hold tokens " in line
    new_tokens = client.get_model_version("emotalker-transformer", versions(second)["transformer"]).tags
    old_tokens = best.tags
    assert old_tokens["data.tokens"] in line and new_tokens["data.tokens"] in line
    assert old_tokens["data.tokens"] != new_tokens["data.tokens"]

    assert main(args) == 0  # the default: the models trained on these stores
