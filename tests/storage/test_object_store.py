"""Feature stores on object storage: sharded layout, requests per clip, storage options, portability.

Request counts come from a real S3-compatible server (moto, loopback) and its access log.
"""

from __future__ import annotations

import json
import pickle
import uuid
from pathlib import Path

import numpy as np
import pytest
import zarr

from emotalker.configs.schema import ConfigError, load_config
from emotalker.storage.workspace import Workspace
from emotalker.storage.zarr_store import FeatureStore, StoreRoot, feature_store


def _arrays(t: int = 600, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "coeffs": rng.standard_normal((t, 257)).astype(np.float32),
        "motion": rng.standard_normal((t, 70)).astype(np.float32),
        "valid": np.ones(t, bool),
    }


def _s3_root(srv, name: str | None = None) -> StoreRoot:
    return StoreRoot(f"s3://emotalker/{name or uuid.uuid4().hex}", srv.storage_options)


def _s3_overrides(srv, root: Path, prefix: str) -> list[str]:
    """Config overrides that put the stores under ``s3://emotalker/<prefix>`` with the server's options,
    as a user's config would."""
    return [
        f"paths.root={root}",
        f"paths.features_url=s3://emotalker/{prefix}",
        f"paths.storage_options={json.dumps(srv.storage_options)}",
    ]


# ---------------------------------------------------------------------------------------------- layout
def test_each_clip_array_is_one_shard_and_the_group_metadata_holds_its_arrays(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path, "face")
    data = _arrays(600)  # 3 time chunks of 256 frames
    store.write_clip("c", data, fingerprint="f")
    clip = tmp_path / "face.zarr" / "clips" / "c"
    for key in data:
        objects = sorted(p.relative_to(clip / key).as_posix() for p in (clip / key).rglob("*") if p.is_file())
        assert objects == ["c/0" if key == "valid" else "c/0/0", "zarr.json"], key
        meta = json.loads((clip / key / "zarr.json").read_text())
        assert meta["codecs"][0]["name"] == "sharding_indexed"
        assert meta["codecs"][0]["configuration"]["chunk_shape"][0] == 256  # windows still read one chunk
    group = json.loads((clip / "zarr.json").read_text())
    assert group["attributes"]["complete"] is True and group["attributes"]["fingerprint"] == "f"
    assert sorted(group["consolidated_metadata"]["metadata"]) == sorted(data)
    np.testing.assert_array_equal(store.read_slice("c", "coeffs", 250, 530), data["coeffs"][250:530])
    np.testing.assert_array_equal(store.read_clip("c")["motion"], data["motion"])


def test_stores_written_before_sharding_still_read_and_a_rewrite_leaves_no_old_objects(
    tmp_path: Path,
) -> None:
    # a clip as the previous code wrote it: unsharded time chunks, no consolidated metadata
    old = _arrays(600, seed=1)
    root = zarr.open_group(str(tmp_path / "face.zarr"), mode="a", zarr_format=3)
    g = root.require_group("clips").create_group("c", attributes={"complete": False})
    for key, arr in old.items():
        g.create_array(key, shape=arr.shape, dtype=arr.dtype, chunks=(256, *arr.shape[1:]), fill_value=0)[
            ...
        ] = arr
    g.attrs.put({"complete": True, "fingerprint": "old", "n_frames": 600})

    store = FeatureStore(tmp_path, "face")
    assert store.has_clip("c", "old") and store.clip_ids() == ["c"]
    assert store.keys("c") == sorted(old)
    np.testing.assert_array_equal(store.read_slice("c", "coeffs", 300, 520), old["coeffs"][300:520])
    np.testing.assert_array_equal(store.read_clip("c")["valid"], old["valid"])

    new = _arrays(600, seed=2)
    store.write_clip("c", new, fingerprint="new")
    chunk_files = sorted(p.name for p in (tmp_path / "face.zarr/clips/c/coeffs/c").rglob("*") if p.is_file())
    assert chunk_files == ["0"]  # the old c/1/0, c/2/0 are gone
    np.testing.assert_array_equal(FeatureStore(tmp_path, "face").read_clip("c")["coeffs"], new["coeffs"])


# -------------------------------------------------------------------------------------------- requests
def test_requests_per_clip_on_s3(s3_server) -> None:
    location = _s3_root(s3_server)
    store = FeatureStore(location, "face")
    store.write_clip("first", _arrays(40))  # creates the store's root groups
    data = _arrays(600)

    mark = s3_server.mark()
    store.write_clip("c", data, fingerprint="f")
    written = s3_server.requests(mark)
    # one listing (is there an older version to delete?), one PUT per array metadata and shard, the commit
    assert written["total"] == 2 * len(data) + 2 and written["PUT"] == 2 * len(data) + 1
    assert written["HEAD"] == 0

    reader = FeatureStore(location, "face")
    reader.has_clip("first")  # opens the store root once
    mark = s3_server.mark()
    got = reader.read_clip("c")
    read = s3_server.requests(mark)
    assert read["total"] == 1 + len(data) and read["HEAD"] == 0  # group metadata, then one shard each
    for key in data:
        np.testing.assert_array_equal(got[key], data[key])

    mark = s3_server.mark()
    assert reader.has_clip("c", "f") and not reader.has_clip("missing")
    assert s3_server.requests(mark)["total"] == 2

    mark = s3_server.mark()
    store.write_clip("c", _arrays(300, seed=5), fingerprint="g")  # replacing: the old objects go first
    replaced = s3_server.requests(mark)
    # two bulk deletes: the old commit marker alone first, then the rest of the old version
    assert replaced["POST"] == 2 and replaced["HEAD"] == 0
    assert reader.read_attrs("c")["fingerprint"] == "g" and reader.shape("c", "coeffs") == (300, 257)


# ------------------------------------------------------------------------------------ storage options
def test_storage_options_from_the_config_reach_the_stores_and_survive_pickling(s3_server, tmp_path) -> None:
    import boto3

    prefix = uuid.uuid4().hex
    cfg = load_config("configs/demo.yaml", _s3_overrides(s3_server, tmp_path, prefix))
    store = feature_store(cfg.paths, "mel")
    assert store.storage_options == s3_server.storage_options
    worker_copy = pickle.loads(pickle.dumps(store))  # what a Dask worker or DataLoader worker gets
    worker_copy.write_clip("c", {"windows": np.ones((5, 80, 16), np.float32)})
    s3 = boto3.client("s3", endpoint_url=s3_server.endpoint, region_name="us-east-1")
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="emotalker", Prefix=prefix)["Contents"]}
    assert f"{prefix}/mel.zarr/clips/c/zarr.json" in keys
    assert StoreRoot.from_paths(cfg.paths).store("mel").read_clip("c")["windows"].shape == (5, 80, 16)
    assert not any(tmp_path.rglob("*.zarr"))  # nothing of the stores is local

    # the backend's request-saving defaults apply, and a configured value wins over them
    assert StoreRoot("s3://b/x").backend_options()["max_concurrency"] == 1
    assert StoreRoot("s3://b/x", {"max_concurrency": 4}).backend_options()["max_concurrency"] == 4


@pytest.mark.parametrize(
    "options, named",
    [
        ("{secret: hunter2-value}", "'secret'"),
        ("{key: AKIA-value}", "'key'"),
        ("{client_kwargs: {aws_secret_access_key: hunter2-value}}", "'client_kwargs.aws_secret_access_key'"),
        ("{token: hunter2-value}", "'token'"),
        ("{account_key: hunter2-value}", "'account_key'"),
    ],
)
def test_credentials_in_storage_options_are_refused_without_echoing_them(options: str, named: str) -> None:
    with pytest.raises(ConfigError, match="credential field") as err:
        load_config(None, [f"paths.storage_options={options}"])
    assert named in str(err.value) and "environment" in str(err.value)
    assert "hunter2" not in str(err.value) and "AKIA" not in str(err.value)


def test_non_secret_storage_options_are_accepted() -> None:
    cfg = load_config(
        None, ["paths.storage_options={anon: true, token: anon, client_kwargs: {region_name: x}}"]
    )
    assert cfg.paths.storage_options["anon"] is True


def test_store_url_is_redacted_in_reprs_and_errors() -> None:
    url = f"memory://user:hunter2@{uuid.uuid4().hex}/feats?sig=hunter2"
    store = FeatureStore(url, "face")
    assert "hunter2" not in repr(store) and "hunter2" not in repr(StoreRoot(url))
    store.write_clip("a", {"x": np.arange(3)})
    with pytest.raises(KeyError) as err:
        store.read_clip("missing")
    assert "hunter2" not in str(err.value) and "missing" in str(err.value)


# ------------------------------------------------------------------------- k-means and failure records
def _fitted_kmeans():
    from emotalker.tasks.features.kmeans import fit_kmeans

    return fit_kmeans(np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32), k=4, n_init=1)


def test_kmeans_is_recorded_relative_to_the_stores_and_found_from_another_root(
    tmp_path: Path, s3_server
) -> None:
    import shutil

    from emotalker.tasks.features.kmeans import (
        kmeans_fingerprint,
        kmeans_relpath,
        recorded_kmeans,
        store_kmeans,
    )

    km = _fitted_kmeans()
    rel = kmeans_relpath("abc")
    assert not Path(rel).is_absolute()
    first = StoreRoot(tmp_path / "machine1" / "features")
    store_kmeans(km, first, rel, {"k": 4})
    moved = tmp_path / "machine2" / "features"
    shutil.copytree(tmp_path / "machine1" / "features", moved)
    shutil.rmtree(tmp_path / "machine1")
    got = recorded_kmeans(StoreRoot(moved), {"kmeans_path": rel})
    assert kmeans_fingerprint(got) == kmeans_fingerprint(km)
    # a record from before models moved beside the stores: an absolute path that no longer exists
    old = {"kmeans_path": str(tmp_path / "machine1" / "features" / rel)}
    assert kmeans_fingerprint(recorded_kmeans(StoreRoot(moved), old)) == kmeans_fingerprint(km)

    bucket = _s3_root(s3_server)
    store_kmeans(km, bucket, rel, {"k": 4})
    assert bucket.exists(rel) and bucket.exists(rel + ".json")
    fresh = StoreRoot(bucket.root, s3_server.storage_options)  # another machine: the URL and options only
    assert kmeans_fingerprint(recorded_kmeans(fresh, {"kmeans_path": rel})) == kmeans_fingerprint(km)
    with pytest.raises(FileNotFoundError, match="audio-features"):
        recorded_kmeans(fresh, {"kmeans_path": kmeans_relpath("other")})


def test_failure_records_live_beside_the_stores(s3_server, tmp_path: Path) -> None:
    from emotalker.storage.failures import load_failures, record_failures

    prefix = uuid.uuid4().hex
    cfg = load_config("configs/demo.yaml", _s3_overrides(s3_server, tmp_path, prefix))
    record_failures(
        StoreRoot.from_paths(cfg.paths), "face", {"a": {"error": "no face", "fingerprint": "f"}, "b": None}
    )
    assert StoreRoot.from_paths(cfg.paths).exists("face.failures.json")
    other = load_config("configs/demo.yaml", _s3_overrides(s3_server, tmp_path / "elsewhere", prefix))
    assert load_failures(StoreRoot.from_paths(other.paths), "face") == {
        "a": {"error": "no face", "fingerprint": "f"}
    }
    assert not list(tmp_path.rglob("*.failures.json"))


def test_the_flows_listing_spares_new_clips_the_per_clip_listing(s3_server, tmp_path: Path) -> None:
    """``plan.pending`` lists each family once; a clip it did not find is written with one PUT per object
    (shard, array metadata, group metadata), a stale one is cleared first."""
    from emotalker.tasks.features.audio_io import write_wav
    from emotalker.tasks.features.families import REGISTRY
    from emotalker.tasks.features.plan import pending
    from emotalker.tasks.features.workers import compute_chunk

    cfg = load_config("configs/demo.yaml", _s3_overrides(s3_server, tmp_path, uuid.uuid4().hex))
    root = StoreRoot.from_paths(cfg.paths)
    root.store("mel").write_clip("old", {"windows": np.zeros((3, 80, 16), np.float32)}, fingerprint="was")
    clips = []
    for cid in ("new", "old", "fresh"):
        wav = tmp_path / f"{cid}.wav"
        write_wav(wav, (np.random.default_rng(0).standard_normal(8000) * 0.1).astype(np.float32))
        clips.append({"clip_id": cid, "prepared_audio": str(wav), "n_frames": 12})
    root.store("mel").write_clip("fresh", {"windows": np.zeros((12, 80, 16), np.float32)}, fingerprint="fp")

    todo = {c["clip_id"]: c for c in pending(Workspace.from_paths(cfg.paths), "mel", clips, "fp")}
    assert {cid: c["in_store"] for cid, c in todo.items()} == {"new": False, "old": True}
    mark = s3_server.mark()
    assert compute_chunk([todo["new"]], REGISTRY["mel"], root, {}, "cpu", "fp")[0]["ok"]
    assert s3_server.requests(mark) == {"PUT": 3, "total": 3}
    mark = s3_server.mark()
    assert compute_chunk([todo["old"]], REGISTRY["mel"], root, {}, "cpu", "fp")[0]["ok"]
    assert s3_server.requests(mark)["GET"] >= 1  # the listing that finds the stale version to delete
    fresh = StoreRoot.from_paths(cfg.paths).store("mel")
    assert fresh.has_clip("new", "fp") and fresh.has_clip("old", "fp")
    assert fresh.read_clip("new")["windows"].shape == (12, 80, 16)
