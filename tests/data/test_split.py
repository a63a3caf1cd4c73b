import json

import pytest

from emotalker.storage.split import SplitError, load_split, make_split, write_split_once


def _clips(actors, per_actor=3):
    return [
        {"clip_id": f"{a}_front_angry_level_1_{i:03d}", "actor": a} for a in actors for i in range(per_actor)
    ]


def test_split_holds_out_whole_actors():
    clips = _clips(["M003", "M030", "W009", "M001", "M002", "W001"])
    split = make_split(clips, ["M003", "W009", "X999"], [], 0.2, seed=0)
    assert split["actors"]["test"] == ["M003", "W009"]  # requested actors that exist
    assert len(split["actors"]["val"]) == 1
    sets = {k: {c.split("_")[0] for c in split[k]} for k in ("train", "val", "test")}
    assert not (sets["train"] & sets["test"]) and not (sets["train"] & sets["val"])
    assert sum(len(split[k]) for k in ("train", "val", "test")) == len(clips)
    assert make_split(clips, ["M003", "W009", "X999"], [], 0.2, seed=0) == split  # reproducible


def test_no_training_actor_left_is_an_error():
    with pytest.raises(SplitError, match="no training actors"):
        make_split(_clips(["M003"]), ["M003"], [], 0.0, seed=0)
    with pytest.raises(SplitError, match="prepare flow"):
        make_split([], ["M003"], [], 0.0, seed=0)


def test_split_is_written_once_and_new_clips_join_their_actor(tmp_path):
    path = tmp_path / "split.json"
    first = make_split(_clips(["M003", "M001", "M002"]), ["M003"], ["M002"], 0.0, seed=0)
    written, changed = write_split_once(path, first)
    assert changed and written == first
    # a different request later does not move anything
    again = make_split(_clips(["M003", "M001", "M002"]), ["M001"], [], 0.0, seed=1)
    kept, changed = write_split_once(path, again)
    assert not changed and kept["actors"] == first["actors"]
    # more clips of a known actor, and a new actor, are appended without moving old ones
    more = _clips(["M003", "M001", "M002"], per_actor=4) + _clips(["W777"], 1)
    grown, changed = write_split_once(path, make_split(more, ["M003"], ["M002"], 0.0, seed=0))
    assert changed
    assert set(first["test"]) < set(grown["test"]) and "M003_front_angry_level_1_003" in grown["test"]
    assert "W777" in grown["actors"]["train"]
    assert json.loads(path.read_text()) == grown == load_split(path)


def test_missing_split_file_says_what_to_run(tmp_path):
    with pytest.raises(SplitError, match="prepare flow"):
        load_split(tmp_path / "split.json")
