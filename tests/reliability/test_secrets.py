"""A tracking URI with credentials (issue 18, case 9): refused in every command without echoing it; the
credentials reach MLflow from the environment (as MLflow documents) and nothing else: not the terminal,
the Prefect database (parameters, states, logs, events) or the MLflow store."""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from emotalker.storage.manifest import Manifest
from emotalker_testkit.deployments import PREFECT
from emotalker_testkit.reliability import CONFIG, REPO, CliRun

CLIP = "M003_front_angry_level_1_001"


class _AuthRecorder(BaseHTTPRequestHandler):
    """A tracking server that is down (503) and remembers the Authorization headers it was sent."""

    seen: list[str] = []

    def _answer(self) -> None:
        type(self).seen.append(self.headers.get("Authorization", ""))
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


def _prefect_db_bytes() -> bytes:
    from prefect.settings import get_current_settings

    url = str(get_current_settings().server.database.connection_url.get_secret_value())
    db = Path(url.split(":///", 1)[1])
    return b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))


def _tree_bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in root.rglob("*") if p.is_file())


def test_every_deployed_flow_refuses_credentials_in_its_parameter_schema():
    """The schema each deployment in prefect.yaml is given (what the Prefect server enforces)."""
    import yaml
    from prefect.flows import load_flow_from_entrypoint
    from prefect.utilities.callables import parameter_schema
    from prefect.utilities.schema_tools.validation import ValidationError, validate

    secret = f"s3cr3t-{secrets.token_hex(6)}"
    declared = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
    assert all(d["enforce_parameter_schema"] is True for d in declared)
    for entrypoint in sorted({d["entrypoint"] for d in declared}):
        schema = parameter_schema(load_flow_from_entrypoint(str(REPO / entrypoint))).model_dump_for_openapi()
        clean = {
            "config": "demo",
            "overrides": ["paths.root=/data/@team", "mlflow.tracking_uri=http://h:5000/"],
        }
        required = {k: "x" for k in schema.get("required", []) if k not in clean}  # e.g. score's videos, name
        validate(clean | required, schema, raise_on_error=True)
        for params, field in (
            (
                {"overrides": ["data.workers=1", f"mlflow.tracking_uri=https://bob:{secret}@h/"]},
                "overrides[1]",
            ),
            ({"config": f"s3://b/demo.yaml?token={secret}"}, "config"),
            (  # issue 30 case 6: an authorization header deep in storage options
                {
                    "overrides": [
                        "paths.storage_options={client_kwargs: {headers: "
                        f"{{Authorization: 'Bearer {secret}'}}}}}}"
                    ]
                },
                "overrides[0]",
            ),
        ):
            with pytest.raises(ValidationError) as refused:
                validate(params | required, schema, raise_on_error=True)
            message = str(refused.value)
            assert secret not in message, entrypoint
            assert f"field {field!r}" in message and "MLFLOW_TRACKING_PASSWORD" in message, (
                entrypoint,
                message,
            )


def test_every_flow_called_from_python_refuses_credentials_before_prefect_creates_a_run():
    """Prefect creates a directly called flow's run (storing its parameters) before validating them; every
    pipeline flow refuses credentials first. The API address is unreachable: a flow that got as far as
    creating a run would fail on the connection instead."""
    import yaml
    from prefect.flows import load_flow_from_entrypoint
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from emotalker.flows.common import CredentialsInParameters, PipelineFlow

    secret = f"s3cr3t-{secrets.token_hex(6)}"
    declared = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        for entrypoint in sorted({d["entrypoint"] for d in declared}):
            flow = load_flow_from_entrypoint(str(REPO / entrypoint))
            assert isinstance(flow, PipelineFlow), entrypoint
            with pytest.raises(CredentialsInParameters) as refused:
                flow(
                    config="demo",
                    overrides=["data.workers=1", f"mlflow.tracking_uri=https://bob:{secret}@h/"],
                )
            message = str(refused.value)
            assert secret not in message and "parameter overrides[1]" in message, (entrypoint, message)
            assert "MLFLOW_TRACKING_PASSWORD" in message
            with pytest.raises(CredentialsInParameters, match="parameter config"):
                flow(config=f"s3://b/demo.yaml?token={secret}")


@pytest.mark.slow
def test_tracking_credentials_never_leave_the_environment(prefect_server, tmp_path, capsys, monkeypatch):
    from emotalker.flows.cli import main

    secret = f"s3cr3t-{secrets.token_hex(6)}"
    root = tmp_path / "root"
    root.mkdir()
    # in the URI: refused by every command, before any flow run exists, without echoing it
    uri_with = f"mlflow.tracking_uri=http://alice:{secret}@127.0.0.1:9/"
    face, speech = tmp_path / "face.png", tmp_path / "speech.wav"
    for args in (
        ["config", "--config", CONFIG, "--set", uri_with],
        ["run", "evaluate", "--config", CONFIG, "--set", f"paths.root={root}", "--set", uri_with],
        ["generate", "--config", CONFIG, "--set", uri_with, "--image", str(face), "--audio", str(speech)]
        + ["--out", str(tmp_path / "out")],
    ):
        assert main(args) == 2
        out, err = capsys.readouterr()
        assert secret not in out + err
        [line] = [x for x in err.splitlines() if x.startswith("emotalker:")]
        assert "mlflow.tracking_uri holds credentials" in line and "MLFLOW_TRACKING_PASSWORD" in line

    # from the environment: MLflow sends them, nobody prints or stores them
    row = {"clip_id": CLIP, "actor": "M003", "view": "front", "emotion": "angry", "level": 1}
    Manifest(root / "manifest.parquet").upsert([{**row, "sentence": "001"}])
    split = {"train": [], "val": [], "test": [CLIP], "actors": {"train": [], "val": [], "test": ["M003"]}}
    (root / "split.json").write_text(json.dumps(split))
    _AuthRecorder.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _AuthRecorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", secret)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    home = tmp_path / "prefect-home"
    home.mkdir()
    uri = f"http://127.0.0.1:{server.server_address[1]}/"
    args = ["run", "evaluate", "--config", CONFIG, "--set", f"paths.root={root}"]
    run = CliRun([*args, "--set", f"mlflow.tracking_uri={uri}"], home, tmp_path / "cli.log")
    try:
        rc = run.wait(timeout=300)
    finally:
        server.shutdown()
    output = run.log.read_text(errors="replace")
    assert rc != 0 and "Traceback" not in output
    assert "evaluate" in output and f"127.0.0.1:{server.server_address[1]}" in output  # it did try
    expected = "Basic " + base64.b64encode(f"alice:{secret}".encode()).decode()
    assert _AuthRecorder.seen and set(_AuthRecorder.seen) == {expected}  # MLflow used the environment
    assert secret not in output
    assert secret.encode() not in _prefect_db_bytes()
    assert secret.encode() not in _tree_bytes(root) + _tree_bytes(home)


@pytest.mark.slow
def test_deployment_run_with_credentials_is_refused_before_prefect_stores_it(deployed, tmp_path):
    """``prefect deployment run 'reproduce/demo'`` with a secret in a parameter: the Prefect server refuses
    it against the deployment's parameter schema, so no flow run, parameter, state or log holds it."""
    import requests

    secret = f"s3cr3t-{secrets.token_hex(6)}"
    # the whole refusal on one line, however narrow the terminal running the test
    env = {**deployed["env"], "PREFECT_CLI_WRAP_LINES": "false"}
    run = [PREFECT, "deployment", "run", "reproduce/demo"]
    runs_url = f"{deployed['api']}/flow_runs/filter"
    before = {r["id"] for r in requests.post(runs_url, json={}, timeout=10).json()}
    cases = {
        "overrides[1]": [
            "-p",
            f'overrides=["data.workers=1", "mlflow.tracking_uri=http://alice:{secret}@h/"]',
        ],
        "config": ["-p", f'config="https://alice:{secret}@h/demo.yaml"'],
        "overrides[0]": [
            "--params",
            json.dumps({"overrides": [f"paths.root=s3://b/x?X-Amz-Signature={secret}"]}),
        ],
    }
    for field, args in cases.items():
        done = subprocess.run([*run, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        output = done.stdout + done.stderr
        assert done.returncode == 1, output
        assert "Traceback" not in output and secret not in output
        [line] = [x for x in output.splitlines() if "Validation failed" in x]
        assert f"Validation failed for field '{field}'" in line, line
        assert "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD" in line, line
    # a credential-free value with an "@" in a path is a parameter like any other
    done = subprocess.run(
        [*run, "-p", 'overrides=["paths.root=/data/@team"]', "--start-in", "10 days"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    created = {r["id"] for r in requests.post(runs_url, json={}, timeout=10).json()} - before
    assert len(created) == 1  # only the clean one
    requests.delete(f"{deployed['api']}/flow_runs/{created.pop()}", timeout=10).raise_for_status()
    assert secret.encode() not in _prefect_db_bytes()
