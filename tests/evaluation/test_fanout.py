"""The evaluation's clips on a local Dask cluster give the in-process numbers, models built per worker."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest

from emotalker.configs.schema import DaskConfig
from emotalker.tasks.demo.synthetic.mead import write_mp4
from emotalker.tasks.evaluation.fanout import gpu_resources, map_clips
from emotalker_testkit.fanout import image_metrics
from emotalker_testkit.squares import square_frames

METRICS = ("ssim", "cpbd", "f_lmd", "m_lmd", "f_lmd_eat", "m_lmd_eat", "lmd_frames", "image_frames")
METRICS += ("emo_acc",)
BOX = (60, 20, 260, 220)


def _clip(path: Path, centre: tuple[int, int], half: float, n: int = 12) -> Path:
    background = np.linspace(20, 120, n).astype(np.uint8)  # EmoAcc's stand-in: dark "sad", bright "happy"
    write_mp4(square_frames(n, (240, 320), centre, half, background), path, fps=25)
    return path


@pytest.mark.slow
def test_clips_on_a_local_dask_cluster_equal_in_process(tmp_path: Path) -> None:
    a, b = _clip(tmp_path / "a.mp4", (160, 120), 20), _clip(tmp_path / "b.mp4", (150, 110), 30)
    pa, pb = _clip(tmp_path / "pa.mp4", (170, 125), 24), _clip(tmp_path / "pb.mp4", (140, 100), 26)
    pairs = [(pa, a), (pb, b), (pa, b), (pb, a)]
    work = partial(image_metrics, BOX)
    local = map_clips(work, pairs, dask=None, device="cpu")
    fanned = map_clips(work, pairs, dask=DaskConfig(n_workers=2, threads_per_worker=1), device="cpu")
    for mine, theirs in zip(local, fanned, strict=True):  # same clips, same order, same numbers
        for k in METRICS:
            np.testing.assert_allclose(theirs[k], mine[k], rtol=1e-6, err_msg=k)
    assert len({round(r["f_lmd"], 3) for r in local}) == 4  # the four comparisons differ
    pids = {r["pid"] for r in fanned}
    assert len(pids) <= 2 and local[0]["pid"] not in pids
    assert {r["loads"] for r in fanned} == {1}  # each worker built the models once, for every clip it ran


def test_cuda_clips_ask_for_a_gpu_worker() -> None:
    assert gpu_resources("cuda:0") == {"GPU": 1}
    assert gpu_resources("cpu") is None


def test_what_a_worker_needs_pickles_and_keys_its_models(tmp_path: Path) -> None:
    """The evaluation's per-worker spec crosses to a worker intact; another config loads other models."""
    import pickle

    from emotalker.configs.schema import load_config
    from emotalker.storage.workspace import Workspace
    from emotalker.tasks.evaluation.run import _ClipWork

    cfg = load_config(None, [f"paths.root={tmp_path}"])
    work = _ClipWork(cfg=cfg, versions={"vqvae": "1"}, method="emotalker", ws=Workspace.from_paths(cfg.paths))
    back = pickle.loads(pickle.dumps(work))
    assert back.key() == work.key() and back.cfg == cfg
    other = load_config(None, [f"paths.root={tmp_path}", "face.face_alignment_dir=elsewhere"])
    assert _ClipWork(cfg=other, versions=work.versions, method=work.method, ws=work.ws).key() != work.key()
