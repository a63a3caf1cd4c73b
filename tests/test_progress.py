"""Progress output: plain periodic log lines when stderr is not a terminal (CI, Prefect workers)."""

from __future__ import annotations

import logging

import pytest

from emotalker.tasks import progress as progress_mod


def test_plain_progress_logs_counts_rate_and_eta_without_a_tty(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(progress_mod.sys.stderr, "isatty", lambda: False)
    monkeypatch.setattr(progress_mod, "PLAIN_EVERY_S", 0.0)
    with caplog.at_level(logging.INFO, logger="emotalker.progress"):
        bar = progress_mod.progress_bar(4, "train-vqvae", unit="step", every_s=0.0)
        bar.set_postfix(loss=0.5)
        for _ in range(2):
            bar.update(1)
        bar.close()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("train-vqvae: 1/4 step") and "ETA" in lines[0] and "loss=0.5" in lines[0]
    assert lines[-1].startswith("train-vqvae: 2/4 step")


def test_progress_iterates_everything_and_logs_the_end(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(progress_mod.sys.stderr, "isatty", lambda: False)
    with caplog.at_level(logging.INFO, logger="emotalker.progress"):
        items = list(progress_mod.progress(range(3), desc="clips", unit="clip"))
    assert items == [0, 1, 2]
    assert caplog.records[-1].getMessage().startswith("clips: 3/3 clip")


def test_inside_a_prefect_run_progress_is_mirrored_to_a_progress_artifact_in_steps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import prefect.artifacts

    calls: list[tuple[str, float]] = []
    monkeypatch.setattr(progress_mod.sys.stderr, "isatty", lambda: False)
    monkeypatch.setattr(progress_mod, "_in_prefect_run", lambda: True)
    monkeypatch.setattr(
        prefect.artifacts,
        "create_progress_artifact",
        lambda progress, description: calls.append((description, progress)) or "artifact-1",
    )
    monkeypatch.setattr(
        prefect.artifacts,
        "update_progress_artifact",
        lambda artifact_id, progress: calls.append((artifact_id, progress)),
    )
    bar = progress_mod.progress_bar(200, "train-vqvae", unit="step")
    for _ in range(150):
        bar.update(1)
    bar.close()
    assert calls[0] == ("train-vqvae", 0.0)
    pushed = [p for _, p in calls[1:]]
    assert pushed[0] == 0.5 and pushed[-1] == 75.0  # first step, then every >= 2%, and the end on close
    assert len(pushed) == 39 and all(b - a >= 2.0 for a, b in zip(pushed[:-1], pushed[1:-1], strict=False))
    assert progress_mod.progress_bar(5, "x", artifact=False).__class__.__name__ == "_PlainProgress"
