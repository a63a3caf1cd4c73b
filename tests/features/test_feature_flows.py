"""Feature flows through Prefect on a real ``dask scheduler`` + 2 ``dask worker`` processes (loopback):
stores filled, reruns as no-ops, staleness by fingerprint (slow, run in CI).

The external workers live for the whole module, so a model a worker cached for one run is still there
for the next: the staleness tests also check that a replaced checkpoint is really reloaded.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from distributed import Client

from emotalker.configs.constants import COEFF_SLICES
from emotalker.configs.schema import load_config
from emotalker.models.motion import coeffs_to_motion
from emotalker.storage.manifest import Manifest
from emotalker.storage.zarr_store import FeatureStore
from emotalker_testkit.imports import run_fresh
from emotalker_testkit.pipeline import tiny_overrides

pytestmark = pytest.mark.slow
CONFIG = str(Path(__file__).resolve().parents[2] / "configs" / "demo.yaml")
TWO_COMPUTED = {"clips": 2, "computed": 2, "failed": 0, "face": {"computed": 2, "failed": 0}}  # face flow
FACE_FRAMES = 4  # extraction clips are cut to this many frames: real-size ResNet-50/FAN stand-ins on CPU


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"dask scheduler exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"dask scheduler did not listen on 127.0.0.1:{port}")


@pytest.fixture(scope="module")
def dask_address(tmp_path_factory):
    """A dask scheduler and two single-threaded workers as subprocesses, all stopped by PID."""
    work = tmp_path_factory.mktemp("dask")
    dask = str(Path(sys.executable).with_name("dask"))
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    procs: list[subprocess.Popen] = []
    logs = []
    try:
        log = open(work / "scheduler.log", "wb")  # noqa: SIM115 - closed in finally
        logs.append(log)
        cmd = [dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"]
        procs.append(subprocess.Popen(cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT))
        _wait_for_port(port, procs[0])
        for i in range(2):
            log = open(work / f"worker{i}.log", "wb")  # noqa: SIM115 - closed in finally
            logs.append(log)
            cmd = [
                dask,
                "worker",
                address,
                "--nworkers",
                "1",
                "--nthreads",
                "1",
                "--host",
                "127.0.0.1",
                "--no-dashboard",
                "--no-nanny",
                "--local-directory",
                str(work / f"w{i}"),
            ]
            procs.append(subprocess.Popen(cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT))
        with Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=120)
        yield address
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for log in logs:
            log.close()


@pytest.fixture(scope="module")
def flow_env(tmp_path_factory):
    """Prefect test server; cwd in a temp dir for anything written relative to it."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120), pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path_factory.mktemp("cwd"))
        yield


def _prepare(root: Path, ov: list[str]) -> None:
    from emotalker.flows.demo import demo_data_flow
    from emotalker.flows.ingest import download_flow, prepare_flow

    demo_data_flow(CONFIG, ov)
    download_flow(CONFIG, ov)
    prepare_flow(CONFIG, ov)


def _test_server_env() -> dict[str, str]:
    """The environment of a fresh process that reports to this module's Prefect test server."""
    from prefect.settings import PREFECT_API_URL

    return dict(os.environ, PREFECT_API_URL=str(PREFECT_API_URL.value()))


def _mtimes(path: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in path.rglob("*") if p.is_file()}


# ----------------------------------------------------------------------------- audio + synthetic face
@pytest.fixture(scope="module")
def audio_run(flow_env, dask_address, tmp_path_factory):
    """Two actors (14 clips) prepared, then the whole features flow on the external cluster."""
    from emotalker.flows.featurize import features_flow

    root = tmp_path_factory.mktemp("features")
    ov = [*tiny_overrides(root, "[M012, W009]"), f"dask.address={dask_address}"]
    _prepare(root, ov)
    cfg = load_config(CONFIG, ov)
    ids = sorted(r["clip_id"] for r in Manifest(cfg.paths.resolve("manifest")).records())
    return {"root": root, "ov": ov, "cfg": cfg, "ids": ids, "first": features_flow(CONFIG, ov)}


def test_features_flow_on_an_external_dask_cluster_fills_every_store(audio_run, dask_address):
    from emotalker.flows.featurize import features_flow
    from emotalker.tasks.features.hubert import hubert_frames

    cfg, ids, first = audio_run["cfg"], audio_run["ids"], audio_run["first"]
    assert len(ids) == 14
    assert first["face"] == {"clips": 14, "computed": 14, "failed": 0, "face": {"computed": 14, "failed": 0}}
    for family in ("hubert", "mel", "tokens"):
        assert first["audio"][family] == {"computed": 14, "failed": 0}, family
    root = str(cfg.paths.resolve("features"))
    rows = {r["clip_id"]: r for r in Manifest(cfg.paths.resolve("manifest")).records()}
    for family, key, tail in (
        ("face", "motion", (70,)),
        ("face", "coeffs", (257,)),
        ("hubert_emotion", "feats", (32,)),
        ("hubert_content", "feats", (32,)),
        ("mel", "windows", (80, 16)),
        ("tokens", "tokens", ()),
    ):
        store = FeatureStore(root, family)
        assert store.clip_ids() == ids, family
        for cid in ids:
            # audio families at HuBERT's native rate (Eq. 6-7), the others per 25 fps video frame
            native = family.startswith("hubert") or family == "tokens"
            frames = hubert_frames(rows[cid]["audio_samples"]) if native else rows[cid]["n_frames"]
            assert store.shape(cid, key) == (frames, *tail), (family, cid)
    assert FeatureStore(root, "tokens").get_meta()["k"] == cfg.audio.kmeans_k
    # the work ran in the external worker processes: they hold the models they loaded
    with Client(dask_address, timeout="30s") as client:
        # a lambda is pickled by value (the workers cannot import this test module)
        kinds = client.run(
            lambda: sorted(
                {k[0] for k in __import__("emotalker.tasks.features.workers", fromlist=["x"])._MODEL_CACHE}
            )
        )
    assert len(kinds) == 2
    assert any("hubert" in k for k in kinds.values()) and any("kmeans" in k for k in kinds.values())

    before = _mtimes(cfg.paths.resolve("features"))
    again = features_flow(CONFIG, audio_run["ov"])
    assert again["face"]["computed"] == 0
    assert again["audio"]["hubert"] == again["audio"]["mel"] == again["audio"]["tokens"] == 0
    changed = {p for p, t in _mtimes(cfg.paths.resolve("features")).items() if before.get(p) != t}
    # only store-level attributes (the tokens store's k-means pointer) are rewritten, no clip data
    assert all(p.name == "zarr.json" and p.parent.suffix == ".zarr" for p in changed), changed


def test_a_no_op_audio_rerun_in_a_fresh_process_imports_no_model_library(audio_run):
    """What a warm ``emotalker run audio-features`` with every clip fresh costs: the config, the manifest,
    the freshness checks and one flow run, without torch, transformers, sklearn, Dask, MLflow or pandas,
    also with ``device: auto`` (resolving it imports torch, so it is resolved only when there is work)."""
    code = (
        "import json, sys\n"
        "from emotalker.flows.featurize import audio_features_flow\n"
        "result = audio_features_flow(sys.argv[1], json.loads(sys.argv[2]))\n"
    )
    ov = [*audio_run["ov"], "device=auto"]
    result, heavy = run_fresh(code, [CONFIG, json.dumps(ov)], env=_test_server_env())
    assert result == {"clips": 14, "computed": 0, "failed": 0, "hubert": 0, "mel": 0, "tokens": 0}
    assert heavy == []


def test_kmeans_k_change_recomputes_tokens_only_and_one_family_can_be_refreshed(audio_run, flow_run_counts):
    from emotalker.flows.featurize import audio_features_flow

    cfg, ov, ids = audio_run["cfg"], audio_run["ov"], audio_run["ids"]
    feats = cfg.paths.resolve("features")
    root = str(feats)
    tokens = FeatureStore(root, "tokens")
    before_tokens = {c: tokens.read_clip(c, ["tokens"])["tokens"] for c in ids}
    untouched = {f: _mtimes(feats / f"{f}.zarr") for f in ("face", "hubert_emotion", "hubert_content", "mel")}

    out = audio_features_flow(CONFIG, [*ov, "audio.kmeans_k=8"])
    assert out["hubert"] == 0 and out["mel"] == 0
    assert out["tokens"] == {"computed": 14, "failed": 0}
    assert max(int(tokens.read_clip(c, ["tokens"])["tokens"].max()) for c in ids) < 8
    assert tokens.get_meta()["k"] == 8
    for family, mt in untouched.items():
        assert _mtimes(feats / f"{family}.zarr") == mt, f"{family} was rewritten"
    assert len(list((feats / "kmeans").glob("*.joblib"))) == 2

    # back to the configured K: the saved k-means is reused and the tokens are the original ones
    back = audio_features_flow(CONFIG, ov)
    assert back["tokens"] == {"computed": 14, "failed": 0} and back["hubert"] == 0
    assert len(list((feats / "kmeans").glob("*.joblib"))) == 2
    for c in ids:
        np.testing.assert_array_equal(tokens.read_clip(c, ["tokens"])["tokens"], before_tokens[c])

    # one clip missing from one family: rerunning the audio flow fills just that
    mel = FeatureStore(root, "mel")
    old = mel.read_clip(ids[3], ["windows"])["windows"]
    mel.delete_clip(ids[3])
    refresh = audio_features_flow(CONFIG, ov)
    assert refresh["mel"] == {"computed": 1, "failed": 0}
    assert refresh["hubert"] == 0 and refresh["tokens"] == 0
    np.testing.assert_allclose(mel.read_clip(ids[3], ["windows"])["windows"], old, rtol=1e-6)

    # the same through the parent flow: only the stale family's subflow runs
    from emotalker.flows.featurize import features_flow

    mel.delete_clip(ids[4])
    runs = flow_run_counts("face-features", "audio-features")
    out = features_flow(CONFIG, ov)
    assert out["audio"]["mel"] == {"computed": 1, "failed": 0} and out["face"]["computed"] == 0
    assert flow_run_counts("face-features", "audio-features") == {
        "face-features": runs["face-features"],
        "audio-features": runs["audio-features"] + 1,
    }


def test_hubert_stores_of_the_25fps_layout_are_recomputed_once_at_the_native_rate(audio_run):
    """A clip written by an older version (resampled to 25 fps, its own fingerprint) is not read as
    native-rate audio: the features flow recomputes it once, then has nothing to do."""
    from emotalker.flows.featurize import audio_features_flow
    from emotalker.tasks.features.families.hubert import hubert_fingerprint

    cfg, ov, ids = audio_run["cfg"], audio_run["ov"], audio_run["ids"]
    root = str(cfg.paths.resolve("features"))
    cid = ids[0]
    n = FeatureStore(root, "hubert_emotion").read_attrs(cid)["video_frames"]
    for family in ("hubert_emotion", "hubert_content"):
        old = np.zeros((n, 32), np.float32)  # the old layout: one row per video frame, no frame_rate
        FeatureStore(root, family).write_clip(cid, {"feats": old}, attrs={"n_frames": n}, fingerprint="v1")
    out = audio_features_flow(CONFIG, ov)
    assert out["hubert"] == {"computed": 1, "failed": 0}
    for family in ("hubert_emotion", "hubert_content"):
        store = FeatureStore(root, family)
        assert store.has_clip(cid, hubert_fingerprint(cfg))
        assert store.read_attrs(cid)["frame_rate"] == 50 and abs(store.shape(cid, "feats")[0] - 2 * n) <= 1
    assert audio_features_flow(CONFIG, ov)["hubert"] == 0


# ----------------------------------------------------------------------------- Deep3DFace extraction
@pytest.fixture(scope="module")
def face_run(flow_env, dask_address, tmp_path_factory):
    """Two short clips through face.source=extract with the stand-in Deep3DFace/face-alignment weights."""
    from emotalker.flows.featurize import face_features_flow

    root = tmp_path_factory.mktemp("face")
    ov = [
        *tiny_overrides(root, "[M012]"),
        "synthetic.emotions=[happy, neutral]",
        "synthetic.levels=[1]",
        f"dask.address={dask_address}",
        "face.source=extract",
        "face.flip_input=false",
        "face.batch_size=8",
    ]
    _prepare(root, ov)
    cfg = load_config(CONFIG, ov)
    manifest = Manifest(cfg.paths.resolve("manifest"))
    rows = manifest.records()
    assert len(rows) == 2
    # the extractor reads the first n_frames frames: keep a few so the full-size networks run in seconds
    manifest.upsert([dict(r, n_frames=FACE_FRAMES) for r in rows])
    ids = sorted(r["clip_id"] for r in rows)
    return {"root": root, "ov": ov, "cfg": cfg, "ids": ids, "first": face_features_flow(CONFIG, ov)}


def test_face_extraction_stores_every_array_and_restales_when_the_checkpoint_changes(face_run):
    from emotalker.flows.featurize import face_features_flow
    from emotalker.tasks.demo.standins.fake_face_assets import random_recon_state
    from emotalker.tasks.features.families.face import face_fingerprint

    cfg, ov, ids = face_run["cfg"], face_run["ov"], face_run["ids"]
    assert face_run["first"] == TWO_COMPUTED
    store = FeatureStore(str(cfg.paths.resolve("features")), "face")
    assert store.clip_ids() == ids
    first = {c: store.read_clip(c) for c in ids}
    t = FACE_FRAMES
    for arr in first.values():
        assert arr["coeffs"].shape == (t, 257) and arr["motion"].shape == (t, 70)
        assert arr["landmarks"].shape == (t, 68, 2) and arr["trans_params"].shape == (t, 5)
        assert arr["valid"].shape == (t,) and arr["valid"].dtype == bool and arr["valid"].all()
        assert np.isfinite(arr["coeffs"]).all()
        np.testing.assert_allclose(arr["motion"], coeffs_to_motion(arr["coeffs"]), rtol=1e-5, atol=1e-6)
    # the no-op rerun, as a fresh `emotalker run face-features` would run it: no model, no torch
    code = (
        "import json, sys\n"
        "from emotalker.flows.featurize import face_features_flow\n"
        "result = face_features_flow(sys.argv[1], json.loads(sys.argv[2]))\n"
    )
    result, heavy = run_fresh(code, [CONFIG, json.dumps([*ov, "device=auto"])], env=_test_server_env())
    assert result["computed"] == 0 and heavy == []

    # touching the checkpoint changes the fingerprint; rewriting it with other weights recomputes
    ckpt = cfg.face.deep3dface_checkpoint
    fp = face_fingerprint(cfg)
    st = ckpt.stat()
    os.utime(ckpt, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert face_fingerprint(cfg) != fp
    torch.save({"net_recon": random_recon_state(seed=7), "epoch": 20}, ckpt)
    assert face_features_flow(CONFIG, ov) == TWO_COMPUTED
    for c in ids:
        now = store.read_clip(c)
        assert store.read_attrs(c)["fingerprint"] == face_fingerprint(cfg)
        # same detector and FAN, so the same landmarks; new regressor weights, so new coefficients
        np.testing.assert_allclose(now["landmarks"], first[c]["landmarks"], atol=1e-3)
        assert not np.allclose(now["coeffs"], first[c]["coeffs"]), "stale model reused"
    assert face_features_flow(CONFIG, ov)["computed"] == 0


def test_face_import_reads_deep3dface_mat_files(face_run):
    from emotalker.flows.featurize import face_features_flow

    cfg, ids = face_run["cfg"], face_run["ids"]
    imp = face_run["root"] / "imported"
    imp.mkdir()
    rng = np.random.default_rng(0)

    def write(cid: str) -> np.ndarray:
        parts = {
            k: rng.normal(size=(FACE_FRAMES + 2, s.stop - s.start)).astype(np.float32)
            for k, s in COEFF_SLICES.items()
        }
        scipy.io.savemat(str(imp / f"{cid}.mat"), parts)
        return np.concatenate([parts[k] for k in COEFF_SLICES], axis=1)[:FACE_FRAMES]

    expected = {c: write(c) for c in ids}
    ov = [*face_run["ov"], "face.source=import", f"face.import_dir={imp}"]
    assert face_features_flow(CONFIG, ov) == TWO_COMPUTED
    store = FeatureStore(str(cfg.paths.resolve("features")), "face")
    for c in ids:
        got = store.read_clip(c)
        np.testing.assert_allclose(got["coeffs"], expected[c], rtol=1e-6)
        np.testing.assert_allclose(got["motion"], coeffs_to_motion(expected[c]), rtol=1e-5, atol=1e-6)
        assert got["valid"].all() and got["coeffs"].shape == (FACE_FRAMES, 257)
    assert face_features_flow(CONFIG, ov)["computed"] == 0
    # a re-exported coefficient file makes the imported family stale
    time.sleep(0.01)
    expected[ids[0]] = write(ids[0])
    assert face_features_flow(CONFIG, ov)["computed"] == 2
    np.testing.assert_allclose(store.read_clip(ids[0], ["coeffs"])["coeffs"], expected[ids[0]], rtol=1e-6)
