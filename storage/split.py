"""Train/val/test split by actor, written once so every stage and rerun sees the same clips."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from emotalker.storage.files import write_json_atomic


class SplitError(ValueError):
    """A split that cannot be made or no longer matches the config."""


def make_split(
    clips: list[dict[str, Any]],
    test_actors: list[str],
    val_actors: list[str],
    val_fraction: float,
    seed: int,
) -> dict[str, Any]:
    """Assign clips to splits by actor: test and val actors are held out whole (no identity leak).

    With no ``val_actors``, ``val_fraction`` of the remaining actors (at least one when there are two or
    more) is drawn with ``seed``.
    """
    actors = sorted({c["actor"] for c in clips})
    if not actors:
        raise SplitError("no prepared clips to split; run the prepare flow first")
    test = sorted(set(test_actors) & set(actors))
    val = sorted(set(val_actors) & set(actors) - set(test))
    rest = [a for a in actors if a not in test and a not in val]
    if not val_actors and val_fraction > 0 and len(rest) >= 2:
        n_val = max(1, round(len(rest) * val_fraction))
        val = sorted(random.Random(seed).sample(rest, n_val))
        rest = [a for a in rest if a not in val]
    if not rest:
        raise SplitError(f"no training actors left: actors={actors}, test={test}, val={val}")
    by_actor = {"train": rest, "val": val, "test": test}
    split: dict[str, Any] = {"actors": by_actor, "seed": seed, "test_actors_requested": sorted(test_actors)}
    for name, members in by_actor.items():
        keep = set(members)
        split[name] = sorted(c["clip_id"] for c in clips if c["actor"] in keep)
    return split


def write_split_once(path: Path, split: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Write ``split`` unless a split file exists; an existing one wins (returned with False).

    New clips of already-assigned actors are appended to their actor's split, so a rerun after more
    data arrives never moves a clip between splits.
    """
    if path.exists():
        old = json.loads(path.read_text())
        actor_split = {a: name for name, actors in old["actors"].items() for a in actors}
        changed = False
        for name in ("train", "val", "test"):
            for clip in split[name]:
                actor = _actor_of(clip)
                target = actor_split.get(actor, name)
                if actor not in actor_split:
                    old["actors"][target].append(actor)
                    actor_split[actor] = target
                    changed = True
                if clip not in old[target]:
                    old[target].append(clip)
                    changed = True
        if changed:
            for name in ("train", "val", "test"):
                old[name] = sorted(old[name])
                old["actors"][name] = sorted(set(old["actors"][name]))
            write_json_atomic(path, old, indent=2, sort_keys=True)
        return old, changed
    write_json_atomic(path, split, indent=2, sort_keys=True)
    return split, True


def _actor_of(clip_id: str) -> str:
    """Clip ids start with the actor (see storage.manifest.clip_id_for)."""
    return clip_id.split("_", 1)[0]


def load_split(path: Path) -> dict[str, Any]:
    """Read the split file with a clear error when the prepare flow has not written it yet."""
    if not path.is_file():
        raise SplitError(f"split file {path} not found; run the prepare flow (emotalker run prepare) first")
    split = json.loads(path.read_text())
    for name in ("train", "val", "test"):
        if name not in split:
            raise SplitError(f"split file {path} has no {name!r} list")
    return split
