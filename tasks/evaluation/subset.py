"""Which test clips a capped evaluation scores: every emotion, level and test actor, evenly.

The split lists clips by actor, then emotion: its first 8 are angry, contempt and disgusted of one actor,
where a model that collapsed to one emotion scores 0.0 instead of chance. A capped subset therefore takes
the emotions in turn, each with its least-used level and the least-used actor.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from emotalker.configs.constants import EMOTIONS


def balanced_subset(rows: Sequence[Mapping[str, Any]], n: int | None) -> list[str]:
    """Ids of ``n`` test clips (all when ``n`` is None or at least their number): the emotions take turns,
    each picking the clip of its least-used level (then the level least used overall), then of the
    least-used actor, then the first in split order; deterministic for a given split order."""
    if n is None or n >= len(rows):
        return [r["clip_id"] for r in rows]
    remaining: dict[str, list[tuple[int, Mapping[str, Any]]]] = {}
    for i, r in enumerate(rows):
        remaining.setdefault(r["emotion"], []).append((i, r))
    order = [e for e in EMOTIONS if e in remaining] + sorted(set(remaining) - set(EMOTIONS))
    actors: Counter[str] = Counter()
    levels: dict[str, Counter[int]] = {e: Counter() for e in order}  # within each emotion
    all_levels: Counter[int] = Counter()
    picked: list[str] = []
    while len(picked) < n:
        for emotion in order:
            if len(picked) == n or not remaining[emotion]:
                continue
            queue = remaining[emotion]
            used = levels[emotion]
            best = min(
                queue,
                key=lambda ir: (
                    used[ir[1]["level"]],
                    all_levels[ir[1]["level"]],
                    actors[ir[1]["actor"]],
                    ir[0],
                ),
            )
            queue.remove(best)
            used[best[1]["level"]] += 1
            all_levels[best[1]["level"]] += 1
            actors[best[1]["actor"]] += 1
            picked.append(best[1]["clip_id"])
    return picked
