"""A capped evaluation covers every emotion, level and test actor evenly (issue 28)."""

from __future__ import annotations

from collections import Counter

from emotalker.configs.constants import EMOTIONS, LEVELS
from emotalker.storage.manifest import clip_id_for
from emotalker.tasks.evaluation.subset import balanced_subset


def _split_rows(actors: list[str]) -> list[dict]:
    """Test rows in split order (actor, then emotion, then level), as the split lists them."""
    rows = []
    for actor in actors:
        for emotion in EMOTIONS:
            for level in [1] if emotion == "neutral" else LEVELS:
                cid = clip_id_for(actor, "front", emotion, level, "001")
                rows.append({"clip_id": cid, "actor": actor, "emotion": emotion, "level": level})
    return rows


def _picked(rows: list[dict], n: int) -> list[dict]:
    by_id = {r["clip_id"]: r for r in rows}
    return [by_id[c] for c in balanced_subset(rows, n)]


def test_the_first_clips_in_split_order_would_miss_most_emotions() -> None:
    rows = _split_rows(["M003"])
    assert {r["emotion"] for r in rows[:8]} == {"angry", "contempt", "disgusted"}  # the old cap
    picked = _picked(rows, 8)
    assert sorted(r["emotion"] for r in picked) == sorted(EMOTIONS)
    assert len({r["level"] for r in picked}) == 3  # levels in turn too


def test_actors_and_levels_take_turns_across_emotions() -> None:
    rows = _split_rows(["M003", "M030", "W009", "W015"])
    picked = _picked(rows, 16)
    assert Counter(r["emotion"] for r in picked) == dict.fromkeys(EMOTIONS, 2)
    assert Counter(r["actor"] for r in picked) == {"M003": 4, "M030": 4, "W009": 4, "W015": 4}
    assert set(Counter(r["level"] for r in picked if r["emotion"] != "neutral").values()) <= {4, 5}
    assert len({r["clip_id"] for r in picked}) == 16


def test_no_cap_or_a_large_one_keeps_every_clip_in_split_order() -> None:
    rows = _split_rows(["M003"])
    ids = [r["clip_id"] for r in rows]
    assert balanced_subset(rows, None) == ids == balanced_subset(rows, len(rows) + 5)
    assert balanced_subset(rows, 3) == balanced_subset(list(rows), 3)  # deterministic
