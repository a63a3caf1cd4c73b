"""The evaluation run is a plain function: importing it needs no Prefect, and generation needs no
evaluation code (evaluation imports generation, never the other way round)."""

from __future__ import annotations

from emotalker_testkit.imports import run_fresh

MODULES_LOADED = """
import importlib, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
result = sorted(m for m in sys.modules if m == "prefect" or m.startswith(("prefect.", "emotalker.")))
"""


def test_the_evaluation_run_imports_without_prefect():
    loaded, _ = run_fresh(MODULES_LOADED, ["emotalker.tasks.evaluation.run"])
    assert "emotalker.tasks.evaluation.run" in loaded
    assert not [m for m in loaded if m == "prefect" or m.startswith("prefect.")]


def test_generation_does_not_import_evaluation():
    generation = [f"emotalker.tasks.generation.{m}" for m in ("animate", "inference", "render")]
    loaded, _ = run_fresh(MODULES_LOADED, generation)
    assert set(generation) <= set(loaded)
    assert not [m for m in loaded if m.startswith("emotalker.tasks.evaluation")]
