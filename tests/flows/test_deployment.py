"""The README's "Full reproduction with Prefect deployments", on loopback (slow, run in CI).

A real ``prefect server``, the ``emotalker`` process work pool, ``prefect deploy --all`` from this checkout,
a real worker and a real ``mlflow server``; the demo deployments run the tiny synthetic pipeline, then the
runs are read back through the Prefect and MLflow REST APIs.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import yaml

from emotalker_testkit.deployments import BIN, REPO, Services, run_command, run_deployment, wait_http
from emotalker_testkit.pipeline import tiny_overrides

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def services(tmp_path) -> Iterator[Services]:
    svc = Services(tmp_path)
    try:
        yield svc
    finally:
        svc.stop_all()


def test_readme_deployment_recipe(services, tmp_path):
    prefect_port, mlflow_port = _free_port(), _free_port()
    api = f"http://127.0.0.1:{prefect_port}/api"
    tracking = f"http://127.0.0.1:{mlflow_port}"
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "EMOTALKER_HOME": str(REPO),  # prefect.yaml's pull step: the worker runs flows from this checkout
    }
    server_env = {k: v for k, v in env.items() if k != "PREFECT_API_URL"}
    prefect = str(BIN / "prefect")

    # 1. Prefect server, the process work pool, every deployment in prefect.yaml, a worker.
    server = services.start(
        "prefect-server",
        [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(prefect_port)],
        server_env,
    )
    wait_http(f"{api}/health", server, 120, "prefect server", services.tail("prefect-server"))
    run_command([prefect, "work-pool", "create", "emotalker", "--type", "process"], env)
    run_command([prefect, "deploy", "--all"], env, timeout=300)
    deployments = requests.post(f"{api}/deployments/filter", json={}, timeout=10).json()
    declared = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
    assert len(deployments) == len(declared) >= 12
    assert all(d["work_pool_name"] == "emotalker" for d in deployments)
    assert all(d["enforce_parameter_schema"] for d in deployments)  # the server refuses credentials
    pull = deployments[0]["pull_steps"][0]["prefect.deployments.steps.set_working_directory"]
    assert pull["directory"] == str(REPO)  # {{ $EMOTALKER_HOME }} is resolved when deploying
    services.start("worker", [prefect, "worker", "start", "--pool", "emotalker"], env)

    # 2. MLflow tracking server with proxied artifact storage.
    artifacts = tmp_path / "mlflow-artifacts"
    mlflow_server = services.start(
        "mlflow-server",
        [
            str(BIN / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(mlflow_port),
            "--backend-store-uri",
            f"sqlite:///{tmp_path}/mlflow.db",
            "--artifacts-destination",
            str(artifacts),
            "--workers",
            "1",
        ],
        env,
    )
    wait_http(f"{tracking}/health", mlflow_server, 120, "mlflow server", services.tail("mlflow-server"))

    # 3. The demo deployments on a tiny config under tmp_path, tracked by the MLflow server.
    root = tmp_path / "run"
    overrides = tiny_overrides(root) + [
        "synthetic.emotions=[happy, neutral, sad]",
        "synthetic.levels=[1]",
        "train.vqvae.steps=30",
        "audio.kmeans_n_init=1",
        "eval.methods=[]",  # the recipe's plumbing, not Table 1's other rows (tests/flows/test_pipeline.py)
        f"mlflow.tracking_uri={tracking}",
    ]
    params = {"config": "configs/demo.yaml", "overrides": overrides}
    run_deployment("demo-data/demo", params, env, api, services, timeout=300)
    parent_flow_run = run_deployment(
        "reproduce/demo", params, env, api, services, timeout=900
    )  # ~3 min on 2 idle cores

    runs = requests.post(f"{api}/flow_runs/filter", json={}, timeout=10).json()
    states = {(r["name"], r["state"]["type"]) for r in runs}
    assert {r["state"]["type"] for r in runs} == {"COMPLETED"}, states
    children = [r for r in runs if r["parent_task_run_id"] is not None]
    assert len(children) >= 7
    flows = {f["id"]: f["name"] for f in requests.post(f"{api}/flows/filter", json={}, timeout=10).json()}
    ran = {flows[r["flow_id"]] for r in runs}
    expected = {"demo-data", "reproduce", "download", "prepare", "features", "train-vqvae"}
    assert expected | {"train-lip", "train-transformer", "evaluate"} <= ran
    assert parent_flow_run in {r["id"] for r in runs}

    # 4. MLflow, read back through its REST API.
    rest = f"{tracking}/api/2.0/mlflow"
    exp = requests.get(
        f"{rest}/experiments/get-by-name", params={"experiment_name": "emotalker-demo"}, timeout=10
    )
    assert exp.ok, exp.text
    exp_id = exp.json()["experiment"]["experiment_id"]
    found = requests.post(
        f"{rest}/runs/search", json={"experiment_ids": [exp_id], "max_results": 200}, timeout=10
    ).json()["runs"]

    def tags(run: dict[str, Any]) -> dict[str, str]:
        return {t["key"]: t["value"] for t in run["data"].get("tags", [])}

    def metrics(run: dict[str, Any]) -> dict[str, float]:
        return {m["key"]: m["value"] for m in run["data"].get("metrics", [])}

    parents = [r for r in found if tags(r).get("stage") == "reproduce"]
    assert len(parents) == 1
    parent = parents[0]
    assert parent["info"]["status"] == "FINISHED"
    assert {"test/LipL2", "test/FaceL2"} <= set(metrics(parent))
    nested = {
        tags(r)["stage"]: r for r in found if tags(r).get("mlflow.parentRunId") == parent["info"]["run_id"]
    }
    assert {"vqvae", "lip", "transformer"} <= set(nested), sorted(nested)
    for stage in ("vqvae", "lip", "transformer"):
        run = nested[stage]
        assert run["info"]["status"] == "FINISHED"
        assert any(k.startswith("train/") for k in metrics(run)), (stage, sorted(metrics(run)))
        alias = requests.get(
            f"{rest}/registered-models/alias",
            params={"name": f"emotalker-{stage}", "alias": "best"},
            timeout=10,
        )
        assert alias.ok, alias.text
        assert alias.json()["model_version"]["run_id"] == run["info"]["run_id"]
        listed = requests.get(f"{rest}/artifacts/list", params={"run_id": run["info"]["run_id"]}, timeout=10)
        assert {"checkpoint", "config"} <= {f["path"] for f in listed.json().get("files", [])}
    # 5. What the MLflow UI shows, through the same REST API: the experiment opens on its runs (model
    # training kind), every run is described, the plots, the dataset inputs, the Table 1 table, the report.
    exp_tags = {t["key"]: t["value"] for t in exp.json()["experiment"].get("tags", [])}
    assert exp_tags.get("mlflow.experimentKind") == "custom_model_development", exp_tags
    assert "evaluate" in nested
    for run in [parent, *nested.values()]:
        assert len(tags(run).get("mlflow.note.content", "")) > 20, tags(run).get("stage")

    def artifacts_of(run: dict[str, Any], path: str) -> set[str]:
        params = {"run_id": run["info"]["run_id"], "path": path}
        listed = requests.get(f"{rest}/artifacts/list", params=params, timeout=10)
        assert listed.ok, listed.text
        return {f["path"] for f in listed.json().get("files", [])}

    plots = {f"plots/{p}" for p in ("loss_curves.png", "codebook_usage.png", "codebook_tsne.png")}
    assert plots <= artifacts_of(nested["vqvae"], "plots")
    assert "plots/loss_curves.png" in artifacts_of(nested["lip"], "plots")
    assert "evaluation/report.html" in artifacts_of(nested["evaluate"], "evaluation")
    got = requests.get(f"{rest}/runs/get", params={"run_id": nested["vqvae"]["info"]["run_id"]}, timeout=10)
    inputs = got.json()["run"].get("inputs", {}).get("dataset_inputs", [])
    assert {"manifest", "split"} <= {d["dataset"]["name"] for d in inputs}
    assert {"path": "evaluation/table1.json", "type": "table"} in json.loads(
        tags(parent)["mlflow.loggedArtifacts"]
    )
    table = requests.get(
        f"{tracking}/get-artifact",
        params={"run_id": parent["info"]["run_id"], "path": "evaluation/table1.json"},
        timeout=10,
    )
    assert table.ok, table.text
    columns, data = table.json()["columns"], table.json()["data"]
    methods = [row[columns.index("method")] for row in data]
    assert (
        methods[0] == "this run (neutral reference)" and "EmoTalker (paper)" in methods and "LipL2" in columns
    )

    # artifacts went through the server's proxy into its destination, not into the worker's cwd
    assert any(artifacts.rglob("*.safetensors")), sorted(str(p) for p in artifacts.rglob("*"))[:20]
    assert not (REPO / "mlruns").exists() or not any((REPO / "mlruns").rglob(parent["info"]["run_id"]))
