"""Each Dask chunk of a feature family is its own Prefect task run: progress and failures per chunk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from prefect import flow

from emotalker.configs.schema import load_config
from emotalker.flows.featurize import CHUNK_CLIPS, run_on_dask
from emotalker.storage.failures import load_failures
from emotalker.storage.workspace import Workspace
from emotalker.storage.zarr_store import FeatureStore, StoreRoot
from emotalker.tasks.features.audio_io import write_wav
from emotalker.tasks.features.families import family

pytestmark = pytest.mark.slow  # a Prefect server and a one-worker Dask cluster: ~20-60 s
CONFIG = str(Path(__file__).resolve().parents[2] / "configs" / "demo.yaml")


def _chunk_runs(family: str) -> dict[str, str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_=f"{family}-chunk-"))
        )
    return {r.name: r.state_type.value for r in runs}


def test_every_chunk_is_a_task_run_and_failures_are_recorded(tmp_path: Path, prefect_server: None) -> None:
    cfg = load_config(CONFIG, [f"paths.root={tmp_path}", "dask.n_workers=1", "dask.threads_per_worker=1"])
    rng = np.random.default_rng(0)
    clips = []
    for i in range(CHUNK_CLIPS + 1):  # two chunks
        wav = tmp_path / "prepared" / f"c{i:02d}.wav"
        if i != 5:  # one clip's audio is missing: a failure of its chunk, not of the run
            write_wav(wav, (rng.standard_normal(8000) * 0.1).astype(np.float32))
        clips.append({"clip_id": f"c{i:02d}", "n_frames": 12, "prepared_audio": str(wav)})

    @flow(name="mel-chunks")
    def mel_only() -> dict[str, int]:
        return run_on_dask(cfg, Workspace.from_paths(cfg.paths), family("mel"), clips, "fp-test")

    assert mel_only() == {"computed": CHUNK_CLIPS, "failed": 1}
    assert _chunk_runs("mel") == {"mel-chunk-0": "COMPLETED", "mel-chunk-1": "COMPLETED"}
    failures = load_failures(StoreRoot.from_paths(cfg.paths), "mel")
    assert list(failures) == ["c05"] and failures["c05"]["fingerprint"] == "fp-test"
    assert "c05.wav" in failures["c05"]["error"]
    assert len(FeatureStore(cfg.paths.store_root(), "mel").clip_ids()) == CHUNK_CLIPS
