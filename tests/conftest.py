"""Test-wide environment: isolated Prefect home, no telemetry, offline hubs, loopback only."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

_PREFECT_HOME = tempfile.mkdtemp(prefix="emotalker-prefect-")
atexit.register(shutil.rmtree, _PREFECT_HOME, ignore_errors=True)
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_API_ENABLE_HTTP2", "false")
os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

# Prefect binds its console log handler to the sys.stderr of the moment it first sets up logging; do it
# now, so it is never a test's capsys stream that is closed when that test ends
import prefect.main  # noqa: E402, F401


def _flow_run_counts(*names: str) -> dict[str, int]:
    """How many runs of each named Prefect flow the current API (test server or ephemeral) holds."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    with get_client(sync_client=True) as client:
        return {
            n: client.count_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[n]))) for n in names
        }


@pytest.fixture
def flow_run_counts() -> Callable[..., dict[str, int]]:
    """``flow_run_counts("a", "b")`` -> runs of each named flow, to check which subflows a run started."""
    return _flow_run_counts


@pytest.fixture(scope="session")
def prefect_server():
    """One Prefect test server for the whole session (flow, reliability and deployment tests)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session", autouse=True)
def _no_local_prefect_server_left():
    """A CLI call in a test may start the local Prefect server of the test PREFECT_HOME: stop it by pid."""
    yield
    from emotalker.flows.local_server import stop

    stop(Path(_PREFECT_HOME))


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory):
    """moto's S3-compatible server on a random loopback port with bucket ``emotalker`` (stopped by PID);
    test credentials in the environment only, as a user's would be."""
    from benchmarks.s3server import moto_s3

    with moto_s3(tmp_path_factory.mktemp("s3")) as srv:
        yield srv
