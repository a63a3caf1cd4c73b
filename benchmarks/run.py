"""Run the benchmarks: ``python -m benchmarks.run [--quick] [--only NAME ...] [--out DIR]``.

Each benchmark writes ``<out>/<name>.json`` (params, metrics, target, whether it was met, machine info);
``summary.json`` and ``summary.md`` collect the headline numbers. Every benchmark runs in its own
interpreter so peak-memory numbers (RSS on CPU) are not hidden by memory an earlier one left mapped.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from benchmarks.common import machine_info

BENCHMARKS = [
    "face_extraction",
    "hubert",
    "noop_rerun",
    "window_reader",
    "training_step",
    "generation",
    "object_store",
    "renderer",
    "long_audio",
    "batch_generation",
    "eval_clips",
    "evaluation",
    "ablate",
]


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if math.isfinite(v) else str(v)
    return str(v)


def summary_markdown(results: dict[str, dict[str, Any]]) -> str:
    """A short markdown table: one row per benchmark with its headline metrics and target."""
    lines = ["| benchmark | metrics | target | met |", "|---|---|---|---|"]
    for name, r in results.items():
        if "error" in r:
            lines.append(f"| {name} | error: {r['error'].splitlines()[-1]} | {r.get('target', '')} | - |")
            continue
        metrics = ", ".join(f"{k}={_fmt(v)}" for k, v in r["metrics"].items())
        met = {True: "yes", False: "no", None: "n/a"}[r.get("target_met")]
        lines.append(f"| {name} | {metrics} | {r['target']} | {met} |")
    info = machine_info()
    lines.append("")
    lines.append(
        f"Machine: {info['cpu_count']} CPUs, torch threads {info['torch_threads']}, device {info['device']}, "
        f"torch {info['torch']}, load average {info['load_avg_1m']}."
    )
    return "\n".join(lines) + "\n"


def run_one(name: str, quick: bool) -> dict[str, Any]:
    """Run one benchmark module, adding timing, the mode and machine info; errors are recorded."""
    mod = importlib.import_module(f"benchmarks.{name}")
    t0 = time.perf_counter()
    info_before = machine_info()
    try:
        res = mod.run(quick=quick)
    except Exception:  # a failing benchmark must not hide the others
        res = {"error": traceback.format_exc(), "target": getattr(mod, "TARGET", "")}
    res = {"name": name, "quick": quick, **res}
    res["wall_s"] = time.perf_counter() - t0
    res["machine"] = info_before
    return res


def _run_in_child(name: str, quick: bool, out: Path) -> dict[str, Any]:
    """One benchmark in a fresh interpreter, so its RSS peak and warm caches are its own."""
    path = out / f"{name}.json"
    path.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "benchmarks.run", "--single", name, "--out", str(out)]
    proc = subprocess.run(cmd + (["--quick"] if quick else []), check=False)
    if path.exists():
        return json.loads(path.read_text())
    res = {"name": name, "quick": quick, "error": f"benchmark process exited with {proc.returncode}"}
    res["target"] = getattr(importlib.import_module(f"benchmarks.{name}"), "TARGET", "")
    path.write_text(json.dumps(res, indent=2) + "\n")
    return res


def collect_results(out: Path, fresh: dict[str, dict[str, Any]], quick: bool) -> dict[str, dict[str, Any]]:
    """This run's results plus earlier ones of the same kind (quick or full) found in ``out``.

    So ``--only NAME`` refreshes one row of the summary instead of dropping the others.
    """
    results = dict(fresh)
    for name in BENCHMARKS:
        prev = out / f"{name}.json"
        if name not in results and prev.exists():
            old = json.loads(prev.read_text())
            if old.get("quick") == quick:
                results[name] = old
    return {n: results[n] for n in BENCHMARKS if n in results}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="tiny sizes (seconds to a few minutes), for tests")
    ap.add_argument(
        "--only", action="append", choices=BENCHMARKS, help="run only this benchmark (repeatable)"
    )
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--single", choices=BENCHMARKS, help=argparse.SUPPRESS)  # child process mode
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.single:
        res = run_one(args.single, args.quick)
        (args.out / f"{args.single}.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
        return 0
    names = args.only or BENCHMARKS
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        print(f"[bench] {name} ...", flush=True)
        res = _run_in_child(name, args.quick, args.out)
        results[name] = res
        status = "error" if "error" in res else f"target_met={res.get('target_met')}"
        print(f"[bench] {name}: {status} in {res['wall_s']:.1f}s", flush=True)
    results = collect_results(args.out, results, args.quick)
    summary = {
        "quick": args.quick,
        "machine": machine_info(),
        "benchmarks": {
            n: {k: r.get(k) for k in ("metrics", "target", "target_met", "wall_s", "error") if k in r}
            for n, r in results.items()
        },
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    md = summary_markdown(results)
    (args.out / "summary.md").write_text(md)
    print(md)
    return 1 if any("error" in r for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
