"""The package's layers import only downwards: configs -> storage -> models -> tasks -> flows, and the
stages inside ``tasks/`` in pipeline order (a stage never imports a later one)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("configs", "storage", "models", "tasks", "flows")
# tasks/ rooms in pipeline order; modules directly under tasks/ (progress, media, tracking) serve every stage
STAGES = ("data", "features", "training", "generation", "evaluation", "demo")


def _imports() -> list[tuple[str, str]]:
    """(importing module, imported emotalker module) for every ``emotalker.*`` import, lazy ones included."""
    edges = []
    for layer in LAYERS:
        for path in (ROOT / layer).rglob("*.py"):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("emotalker."):
                    edges.append((module, node.module.removeprefix("emotalker.")))
                elif isinstance(node, ast.Import):
                    edges += [
                        (module, a.name.removeprefix("emotalker."))
                        for a in node.names
                        if a.name.startswith("emotalker.")
                    ]
    return edges


def _room(module: str) -> tuple[int, int]:
    parts = module.split(".")
    layer = LAYERS.index(parts[0]) if parts[0] in LAYERS else -1
    stage = STAGES.index(parts[1]) if parts[0] == "tasks" and len(parts) > 2 and parts[1] in STAGES else -1
    return layer, stage


def test_no_import_runs_back_up_a_layer_or_the_pipeline() -> None:
    edges = _imports()
    assert len(edges) > 100  # the walk found the package
    back = [
        f"{a} imports {b}"
        for a, b in edges
        if _room(b)[0] > _room(a)[0] or (_room(a)[0] == _room(b)[0] and _room(b)[1] > _room(a)[1])
    ]
    assert back == [], "\n".join(back)


def test_a_back_edge_would_be_found() -> None:
    """The rule itself: a data task importing a training module, or storage importing tasks, goes back."""
    assert _room("tasks.training.engine")[1] > _room("tasks.data.prepare")[1]
    assert _room("tasks.media")[1] == -1 and _room("tasks.demo.synthetic.mead")[1] == len(STAGES) - 1
    assert _room("tasks.evaluation.run")[0] > _room("storage.manifest")[0]
