"""The demo config's ``ablate``: wall time with today's evaluation loop against the pipeline's.

The ablation starts where the README runs it, after ``make demo``: from ``data/demo`` when a finished demo
is there, else from a demo pipeline built first, untimed (demo data, features, the three stages as ``make
demo`` trains them). That workspace is copied twice (without make demo's stored real side and videos), so
both sides start from the same trained default run and train the same ablation rows (stage fingerprints
reuse nothing the other side trained). Each side is one fresh process running ``ablate_flow`` on the demo
config against the same Prefect server (a temporary test server): training, rendering and scoring of every
row, all tables.

- today: the evaluation as issue 29 measured it (``benchmarks/todays_eval.py``: face-alignment's
  ``detect_from_batch``, the FAN's mirrored crops in a second pass, float32 in the default memory format,
  the ``cpbd`` package's loop, no frame memo, every row computing its real clips' side again);
- pipeline: the code as shipped (the real side stored once for all rows, the pipeline's detectors and
  CPBD, ``eval.detector_dtype`` as the demo config sets it).

Training and rendering are the same code on both sides. Ratio = pipeline / today, in the same run.
``--quick`` shrinks the world (3 actors, 4 emotions, few steps) and runs Table 2 only (three rows, no
training) on 1 clip of 8 frames: a check of the results' shape, no verdict."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from benchmarks.common import DEMO, REPO
from emotalker.tasks.demo.standins.demo_layout import relocated_demo_overrides
from emotalker.tasks.evaluation.reference import REAL_SIDE_STORE

TARGET = "configs/demo.yaml's ablate <= 0.5x today's wall time (2-core CPU)"
RATIO_TARGET = 0.5
QUICK = [
    "synthetic.actors=[M003, W009, M012]",
    "synthetic.emotion_model_steps=0",
    "synthetic.audio2exp_steps=0",
    "synthetic.emotions=[angry, happy, neutral, sad]",
    "synthetic.levels=[1]",
    "dask.n_workers=1",
    "train.vqvae.steps=30",
    "train.vqvae.window=16",
    "train.transformer.steps=10",
    "train.transformer.window=16",
    "train.lip.steps=5",
    "train.lip.window=4",
    "ablation.tables=[2]",  # three rows, no training: the evaluation's share at its largest
    "ablation.eval_max_clips=1",
    "eval.render_max_frames=8",
    "eval.syncnet_checkpoint=null",
]


def _ablate(root: Path, quick: bool, today: bool) -> None:
    """One side: ``ablate_flow`` on the workspace at ``root`` (this process is the side's fresh process)."""
    from benchmarks.todays_eval import todays_evaluation
    from emotalker.flows.ablate import ablate_flow

    with todays_evaluation() if today else nullcontext():
        ablate_flow(str(DEMO), [*relocated_demo_overrides(root), *(QUICK if quick else [])])


def run(quick: bool = False) -> dict[str, Any]:
    """Wall time of the demo ablation with today's evaluation and with the pipeline's, and their ratio."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    from emotalker.flows.demo import demo_data_flow
    from emotalker.flows.featurize import features_flow
    from emotalker.flows.ingest import download_flow, prepare_flow
    from emotalker.flows.train import train_lip, train_transformer, train_vqvae

    config = str(DEMO)
    times: dict[str, float] = {}
    made = REPO / "data" / "demo"  # `make demo`'s workspace: the state the README runs ablate from
    reuse = not quick and (made / "outputs").is_dir() and (made / "mlflow.db").is_file()
    # neither side starts with a stored real side or make demo's videos
    skip = shutil.ignore_patterns(f"{REAL_SIDE_STORE}.*", "outputs")
    with tempfile.TemporaryDirectory() as tmp, prefect_test_harness(server_startup_timeout=180):
        base = made if reuse else Path(tmp) / "base"
        ov = [*relocated_demo_overrides(base), *(QUICK if quick else [])]
        t0 = time.perf_counter()
        if not reuse:
            for flow in (demo_data_flow, download_flow, prepare_flow, features_flow):
                flow(config, ov)
            for stage in (train_vqvae, train_lip, train_transformer):
                stage(config, ov)
        setup_s = time.perf_counter() - t0
        env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
        for side in ("today", "pipeline"):
            root = Path(tmp) / side
            shutil.copytree(base, root, ignore=skip)
            argv = [sys.executable, "-m", "benchmarks.ablate", "--root", str(root), "--side", side]
            t0 = time.perf_counter()
            done = subprocess.run(
                [*argv, *(["--quick"] if quick else [])], cwd=REPO, env=env, capture_output=True, text=True
            )
            times[side] = time.perf_counter() - t0
            if done.returncode != 0:
                raise RuntimeError(f"ablate ({side}) failed ({done.returncode}): {done.stderr[-3000:]}")
            shutil.rmtree(root)
    ratio = times["pipeline"] / times["today"]
    return {
        "params": {
            "config": "configs/demo.yaml" + (" shrunk (--quick: Table 2, 1 clip, 8 frames)" if quick else ""),
            "today": "benchmarks/todays_eval.py: detect_from_batch, FAN flip in a second pass, float32 "
            "default memory format, the cpbd package's loop, no frame memo, no stored real side",
            "pipeline": "as shipped (stored real side, the demo config's eval.detector_dtype)",
            "workspace": "make demo's data/demo, copied" if reuse else "built untimed in a temporary root",
            "server": "prefect_test_harness (temporary local Prefect server, shared by both sides)",
        },
        "metrics": {
            "setup_s": setup_s,
            "today_s": times["today"],
            "pipeline_s": times["pipeline"],
            "ratio": ratio,
        },
        "target": TARGET,
        "target_met": None if quick else bool(ratio <= RATIO_TARGET),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="one side of the ablate benchmark (run by run())")
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--side", choices=("today", "pipeline"), required=True)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    _ablate(args.root, args.quick, args.side == "today")
    return 0


if __name__ == "__main__":
    sys.exit(main())
