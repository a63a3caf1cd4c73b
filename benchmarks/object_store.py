"""Feature stores on object storage: requests and wall time per clip, before and after sharding.

A local S3-compatible server (moto's, loopback, stopped by PID) serves a bucket; every request it answers
is counted from its access log. MEAD-shaped clips (all five families: face with five arrays, HuBERT
emotion/content, tokens, mel windows) are written and read twice in the same run:

- before: the store code as it was (unsharded time chunks, zarr's group API with its existence probes,
  s3fs's default options: a HEAD before every whole-object GET, cached listings);
- after: ``FeatureStore`` now, driven as the feature flows drive it: one listing of each family's clips
  and one clips-group PUT per family before the writes (``plan.pending``, ``run_on_dask``); then each
  clip the listing did not show is encoded in memory and uploaded with one PUT per object, the group
  metadata last and consolidated: no per-clip listing, no existence probes.

Reads: every array of every clip (``read_clip`` from a fresh store, as a feature or evaluation step
does), and the stage-2 ``WindowDataset`` (face + HuBERT emotion + tokens) in random order, with its
decoded-clip cache (default) and without (every window from the server), against training consumption
measured as in window_reader (training_step.measure, paper config).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import device, paper_config
from benchmarks.s3server import moto_s3
from emotalker.configs.constants import AUDIO_FRAMES_PER_VIDEO_FRAME

TARGET = "after: <= 3 requests per clip array (write and read); window reads from S3 >= training consumption"
BUCKET = "emotalker"


def _clip_arrays(rng: np.random.Generator, t: int) -> dict[str, dict[str, np.ndarray]]:
    """One clip of every family, shaped as the feature flows write them (HuBERT and tokens at 50 Hz)."""
    th = AUDIO_FRAMES_PER_VIDEO_FRAME * t - 1
    return {
        "face": {
            "coeffs": rng.standard_normal((t, 257)).astype(np.float32),
            "motion": np.cumsum(0.05 * rng.standard_normal((t, 70)), axis=0).astype(np.float32),
            "landmarks": (100 + rng.standard_normal((t, 68, 2))).astype(np.float32),
            "trans_params": rng.standard_normal((t, 5)).astype(np.float32),
            "valid": np.ones(t, bool),
        },
        "hubert_emotion": {"feats": rng.standard_normal((th, 768)).astype(np.float32)},
        "hubert_content": {"feats": rng.standard_normal((th, 768)).astype(np.float32)},
        "tokens": {"tokens": rng.integers(0, 200, th).astype(np.int16)},
        "mel": {"windows": rng.standard_normal((t, 80, 16)).astype(np.float32)},
    }


# ------------------------------------------------------------------------------- before: the old path
def _legacy_group(url: str, opts: dict[str, Any]) -> Any:
    import zarr

    return zarr.open_group(url, mode="a", zarr_format=3, storage_options=opts)


def _legacy_write(root: Any, clip_id: str, arrays: dict[str, np.ndarray], fp: str) -> None:
    """FeatureStore.write_clip before this change: group API, unsharded time chunks, attrs last."""
    from emotalker.storage.zarr_store import _compressor, _time_chunks

    clips = root.require_group("clips")
    if clip_id in clips:
        del clips[clip_id]
    g = clips.create_group(clip_id, attributes={"complete": False})
    for key, arr in arrays.items():
        z = g.create_array(
            key,
            shape=arr.shape,
            dtype=arr.dtype,
            chunks=_time_chunks(arr.shape, arr.dtype.itemsize),
            compressors=_compressor(),
            fill_value=0,
        )
        z[...] = arr
    g.attrs.put({"n_frames": len(next(iter(arrays.values()))), "fingerprint": fp, "complete": True})


def _legacy_read(root: Any, clip_id: str) -> dict[str, np.ndarray]:
    """FeatureStore.read_clip before this change: the clip group looked up again for every array."""
    g = root[f"clips/{clip_id}"]
    assert g.attrs.get("complete") is True
    out = {}
    for k in sorted(g.array_keys()):
        node = root[f"clips/{clip_id}"]
        assert node.attrs.get("complete") is True
        out[k] = np.asarray(node[k][...])
    return out


# ------------------------------------------------------------------------------------------ measuring
def _measure(srv: Any, fn: Any) -> tuple[float, dict[str, int]]:
    mark = srv.mark()
    t0 = time.perf_counter()
    fn()
    wall = time.perf_counter() - t0
    time.sleep(0.05)  # let the server flush its last log lines
    return wall, dict(srv.requests(mark))


def _objects(srv: Any, prefix: str) -> int:
    import boto3

    s3 = boto3.client("s3", endpoint_url=srv.endpoint, region_name="us-east-1")
    n = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        n += len(page.get("Contents", []))
    return n


def _window_reads(
    stores: dict[str, Any], ids: list[str], window: int, reads: int, cache: int | None
) -> float:
    from emotalker.storage.windows import WindowDataset

    rate = AUDIO_FRAMES_PER_VIDEO_FRAME
    src = {"face": (stores["face"], "motion"), "audio": (stores["hubert_emotion"], "feats", rate)}
    src["tokens"] = (stores["tokens"], "tokens", rate)
    ds = WindowDataset(src, ids, window, cache_bytes=cache)
    order = np.resize(np.random.default_rng(1).permutation(len(ds)), reads)
    t0 = time.perf_counter()
    for i in order:
        ds[int(i)]
    return reads / (time.perf_counter() - t0)


def _run_layout(srv: Any, name: str, clips: dict[str, dict], window: int, reads: int) -> dict[str, Any]:
    from emotalker.storage.zarr_store import FeatureStore, StoreRoot

    url = f"s3://{BUCKET}/{name}"
    n_clips = len(clips)
    n_arrays = sum(len(a) for a in next(iter(clips.values())).values())
    families = list(next(iter(clips.values())))
    if name == "before":
        opts = {"endpoint_url": srv.endpoint, "client_kwargs": {"region_name": "us-east-1"}}
        roots = {f: _legacy_group(f"{url}/{f}.zarr", opts) for f in families}

        def write() -> None:
            for cid, fams in clips.items():
                for f, arrays in fams.items():
                    _legacy_write(roots[f], cid, arrays, "fp")

        def read() -> None:
            fresh = {f: _legacy_group(f"{url}/{f}.zarr", opts) for f in families}
            for cid in clips:
                for f in families:
                    _legacy_read(fresh[f], cid)

        # the old backend behaviour (HEAD before GET, cached listings), on the old layout
        location = StoreRoot(url, {**srv.storage_options, "max_concurrency": 10, "use_listings_cache": True})
    else:
        location = StoreRoot(url, srv.storage_options)
        stores = {f: FeatureStore(location, f) for f in families}

        def write() -> None:
            stored = {f: set(s.clip_ids(complete_only=False)) for f, s in stores.items()}  # as the flow
            for s in stores.values():
                s.ensure_clips_group()
            for cid, fams in clips.items():
                for f, arrays in fams.items():
                    stores[f].write_clip(cid, arrays, fingerprint="fp", replace=cid in stored[f])

        def read() -> None:
            fresh = {f: FeatureStore(location, f) for f in families}
            for cid in clips:
                for f in families:
                    fresh[f].read_clip(cid)

    w_wall, w_req = _measure(srv, write)
    r_wall, r_req = _measure(srv, read)
    raw = sum(a.nbytes for fams in clips.values() for arrs in fams.values() for a in arrs.values())
    ids = list(clips)
    win_stores = {f: FeatureStore(location, f) for f in ("face", "hubert_emotion", "tokens")}
    cached = _window_reads(win_stores, ids, window, reads, None)
    uncached = _window_reads(win_stores, ids, window, max(20, reads // 4), 0)
    return {
        "clips": n_clips,
        "arrays_per_clip": n_arrays,
        "objects_per_clip": _objects(srv, name + "/") / n_clips,
        "write": {
            "wall_s": w_wall,
            "requests": w_req,
            "requests_per_clip": w_req["total"] / n_clips,
            "requests_per_clip_array": w_req["total"] / (n_clips * n_arrays),
            "s_per_clip": w_wall / n_clips,
        },
        "read": {
            "wall_s": r_wall,
            "requests": r_req,
            "requests_per_clip": r_req["total"] / n_clips,
            "requests_per_clip_array": r_req["total"] / (n_clips * n_arrays),
            "mib_per_s": raw / 2**20 / r_wall,
        },
        "window_samples_per_s": {"decoded_cache": cached, "no_cache": uncached},
    }


def run(quick: bool = False) -> dict[str, Any]:
    """Write and read the same clips with the old and the new store code against one moto server."""
    from benchmarks.training_step import consumption as training_consumption

    n_clips = 4 if quick else 24
    reads = 40 if quick else 400
    cfg = paper_config()
    rng = np.random.default_rng(0)
    clips = {
        f"M0{i:02d}_front_angry_3_{i:03d}": _clip_arrays(rng, int(rng.integers(75, 150)))
        for i in range(n_clips)
    }
    window = cfg.train.transformer.window
    with tempfile.TemporaryDirectory() as tmp, moto_s3(Path(tmp)) as srv:
        results = {name: _run_layout(srv, name, clips, window, reads) for name in ("before", "after")}
    dev = device()
    consumption = {s: c["samples_per_s"] for s, c in training_consumption(cfg, dev, quick).items()}
    need = max(consumption.values())
    b, a = results["before"], results["after"]
    metrics = {
        "before_write_requests_per_clip_array": b["write"]["requests_per_clip_array"],
        "after_write_requests_per_clip_array": a["write"]["requests_per_clip_array"],
        "before_read_requests_per_clip_array": b["read"]["requests_per_clip_array"],
        "after_read_requests_per_clip_array": a["read"]["requests_per_clip_array"],
        "write_speedup": b["write"]["wall_s"] / a["write"]["wall_s"],
        "read_speedup": b["read"]["wall_s"] / a["read"]["wall_s"],
        "after_objects_per_clip": a["objects_per_clip"],
        "after_window_no_cache_over_consumption": a["window_samples_per_s"]["no_cache"] / need,
    }
    met = (
        a["write"]["requests_per_clip_array"] <= 3
        and a["read"]["requests_per_clip_array"] <= 3
        and a["window_samples_per_s"]["no_cache"] >= need
    )
    return {
        "params": {
            "clips": n_clips,
            "window_reads": reads,
            "window": window,
            "server": "moto_server on 127.0.0.1 (requests counted from its access log)",
            "consumption_batch_reduced_on_cpu": dev == "cpu",
        },
        "metrics": metrics,
        "layouts": results,
        "consumption_samples_per_s": consumption,
        "target": TARGET,
        "target_met": bool(met),
        "notes": "Features are random normals (incompressible); MEAD-like 3-6 s clips. Window 'before' "
        "reads the old layout through today's reader with the old backend options.",
    }
