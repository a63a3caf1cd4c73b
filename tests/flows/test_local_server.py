"""The CLI's local Prefect server: one per PREFECT_HOME, reused, stopped by pid; a set API URL wins."""

from __future__ import annotations

import psutil
import pytest

from emotalker.flows import local_server


def test_a_configured_api_url_is_used_and_no_server_is_started(tmp_path, monkeypatch) -> None:
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api", PREFECT_HOME: str(tmp_path)}):
        with local_server.api_for_cli() as url:
            assert url == "http://127.0.0.1:9/api"
    assert not (tmp_path / local_server.STATE_FILE).exists()
    assert local_server.stop(tmp_path) is None


@pytest.mark.slow
def test_one_server_per_home_is_reused_and_stopped_by_pid(tmp_path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    try:
        url_a = local_server.ensure(a)
        pid_a = local_server.running(a)["pid"]
        assert local_server.ensure(a) == url_a and local_server.running(a)["pid"] == pid_a  # reused
        assert url_a.startswith("http://127.0.0.1:") and local_server._healthy(url_a)
        assert any(a.glob("*.db"))  # its database lives in its own home
        # another home does not see a's server (a CLI call there would start its own)
        assert local_server.running(b) is None and local_server.stop(b) is None
        assert local_server.stop(a) == pid_a
        assert not psutil.pid_exists(pid_a) or psutil.Process(pid_a).status() == psutil.STATUS_ZOMBIE
        assert local_server.running(a) is None and local_server.stop(a) is None
        assert not local_server._healthy(url_a)
    finally:
        local_server.stop(a)
