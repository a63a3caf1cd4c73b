"""``python -m benchmarks.run --quick`` writes one JSON per benchmark with finite headline numbers.

Checks the shape of the results, not the targets: the numbers depend on the machine.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.run import BENCHMARKS, collect_results, summary_markdown

REPO = Path(__file__).resolve().parents[1]

EXPECTED_METRICS = {
    "face_extraction": {"batched_fps", "per_frame_fps", "speedup"},
    "hubert": {"speedup", "pipeline_rtf", "baseline_rtf", "distinct_pair_speedup"},
    "noop_rerun": {"first_run_s", "second_run_s", "ratio", "cli_noop_reused_server_s"},
    "window_reader": {"demo_loader_samples_per_s", "paper_loader_samples_per_s", "paper_zarr_over_npy"},
    "training_step": {"stage1_step_s", "stage2_step_s", "stage1_tokens_per_s", "stage2_peak_memory_mib"},
    "generation": {"time_growth", "memory_growth", "rtf_2s", "rtf_6s"},
    "renderer": {
        "cpu_fps_ours_float32",
        "cpu_fps_sadtalker_float32",
        "cpu_speedup_float32",
        "memory_growth_ours",
        "memory_growth_sadtalker",
    },
    "object_store": {
        "after_write_requests_per_clip_array",
        "after_read_requests_per_clip_array",
        "write_speedup",
        "read_speedup",
    },
    "long_audio": {"chunked_memory_growth", "chunked_time_per_s_growth", "one_pass_memory_growth"},
    "batch_generation": {"single_calls_s", "batch_s", "speedup", "batch_rerun_noop_s"},
    "eval_clips": {
        "today_s_per_clip",
        "batched_s_per_clip",
        "fanout_s_per_clip",
        "batched_ratio",
        "auto_ratio",
        "fanout_ratio",
    },
    "evaluation": {
        "today_s_per_clip",
        "first_evaluation_s_per_clip",
        "reevaluation_s_per_clip",
        "auto_reevaluation_s_per_clip",
    },
    "ablate": {"today_s", "pipeline_s", "ratio"},
}


def test_summary_markdown_lists_every_benchmark() -> None:
    results = {
        "a": {"metrics": {"x": 1.5}, "target": "x >= 1", "target_met": True},
        "b": {"error": "Traceback\nValueError: boom", "target": "t"},
    }
    md = summary_markdown(results)
    assert "| a | x=1.5 | x >= 1 | yes |" in md
    assert "ValueError: boom" in md


def test_summary_keeps_earlier_results_of_the_same_kind(tmp_path: Path) -> None:
    first, second = BENCHMARKS[0], BENCHMARKS[1]
    (tmp_path / f"{first}.json").write_text(json.dumps({"name": first, "quick": False, "metrics": {"x": 1}}))
    (tmp_path / f"{second}.json").write_text(json.dumps({"name": second, "quick": True, "metrics": {"x": 2}}))
    fresh = {BENCHMARKS[2]: {"name": BENCHMARKS[2], "quick": False, "metrics": {"x": 3}}}
    merged = collect_results(tmp_path, fresh, quick=False)
    assert list(merged) == [first, BENCHMARKS[2]]  # benchmark order; the quick result is not mixed in
    assert merged[first]["metrics"] == {"x": 1} and merged[BENCHMARKS[2]]["metrics"] == {"x": 3}


@pytest.mark.slow
def test_quick_run_writes_complete_results(tmp_path: Path) -> None:
    out = tmp_path / "results"
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "OMP_NUM_THREADS": "2",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--out", str(out)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # one process group: the runner and its per-benchmark children
    )
    try:
        # every quick benchmark (renderer, long audio and object store included) in fresh processes
        log, _ = proc.communicate(timeout=3600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, log[-4000:]
    for name in BENCHMARKS:
        res = json.loads((out / f"{name}.json").read_text())
        assert res["name"] == name and res["quick"] is True
        assert "error" not in res
        assert {"cpu_count", "torch_threads", "device", "torch"} <= set(res["machine"])
        assert isinstance(res["target"], str) and res["target_met"] in (True, False, None)
        missing = EXPECTED_METRICS[name] - set(res["metrics"])
        assert not missing, f"{name} lacks {missing}"
        for key, value in res["metrics"].items():
            assert isinstance(value, int | float) and math.isfinite(value), f"{name}.{key}={value}"
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["benchmarks"]) == set(BENCHMARKS)
    md = (out / "summary.md").read_text()
    assert all(f"| {name} |" in md for name in BENCHMARKS)
