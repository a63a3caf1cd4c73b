"""Kill tests (issue 9): every flow SIGKILLed at a seeded random point, rerun, and compared with an
uninterrupted run of the same config and seed (the session ``reference`` root).

Each flow runs as ``python -m emotalker.flows.cli run <flow>`` in its own process group; the kill takes the
CLI and its Dask workers. The rerun goes through the same flow function in-process.
"""

from __future__ import annotations

import json
import random
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
import soundfile as sf
from mlflow.tracking import MlflowClient

from emotalker.tasks.media import count_video_frames
from emotalker.tasks.training.checkpoint import CheckpointError, load_checkpoint
from emotalker_testkit.compare import (
    assert_state_equal,
    assert_store_equal,
    failures,
    manifest_rows,
    tree_digest,
)
from emotalker_testkit.reliability import CONFIG, kill_when, shared_inputs, tiny_overrides

pytestmark = pytest.mark.slow
RNG = random.Random(9)  # the kill points are random but reproducible


def _delay(lo: float, hi: float) -> float:
    return RNG.uniform(lo, hi)


# ------------------------------------------------------------------------------------------ download
class _SlowHandler(BaseHTTPRequestHandler):
    """Serves files at ~200 KB/s with Range support, so a kill lands mid-download."""

    files: dict[str, bytes] = {}

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        import re
        import time

        data = self.files.get(self.path.lstrip("/"))
        if data is None:
            self.send_error(404)
            return
        start = 0
        m = re.match(r"bytes=(\d+)-$", self.headers.get("Range") or "")
        if m:
            start = int(m.group(1))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        try:
            for i in range(start, len(data), 4096):
                self.wfile.write(data[i : i + 4096])
                time.sleep(0.02)
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture
def slow_server(reference: dict[str, Any]) -> Iterator[str]:
    mirror = reference["root"] / "mirror"
    handler = type("H", (_SlowHandler,), {"files": {p.name: p.read_bytes() for p in mirror.glob("*.tar")}})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_killed_download_resumes_to_the_same_archives(reference, slow_server, cli, tmp_path):
    import hashlib

    from emotalker.flows.ingest import download_flow

    a, b = reference["root"], tmp_path / "root"
    b.mkdir()
    tars = sorted((a / "mirror").glob("*.tar"))
    urls = tmp_path / "urls.txt"
    urls.write_text(
        "".join(
            f"{slow_server}/{p.name} name={p.name} sha256={hashlib.sha256(p.read_bytes()).hexdigest()}\n"
            for p in tars
        )
    )
    ov = tiny_overrides(
        b, *shared_inputs(reference), f"download.urls_file={urls}", "download.chunk_bytes=4096"
    )
    run = cli("run", "download", "--config", CONFIG, *[f"--set={o}" for o in ov])
    archives = b / "archives"
    kill_when(run, lambda: any(p.stat().st_size > 0 for p in archives.glob("*.part")), _delay(0.0, 0.6))
    assert len(list(archives.glob("*.tar.done"))) < len(tars), (
        "the kill must land before every archive is done"
    )

    result = download_flow(CONFIG, ov)
    assert sorted(result["actors"]) == ["M003", "W009"]
    # the same archives byte for byte, no partial file left, the same extracted tree
    got = {k: v for k, v in tree_digest(archives).items() if k.endswith(".tar")}
    assert got == {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in tars}
    assert not list(archives.glob("*.part"))
    assert tree_digest(b / "raw") == tree_digest(a / "raw")


# ------------------------------------------------------------------------------------------- prepare
def test_killed_prepare_resumes_to_the_same_manifest(reference, cli, tmp_path):
    from emotalker.flows.ingest import prepare_flow

    a, b = reference["root"], tmp_path / "root"
    shutil.copytree(a / "raw", b / "raw")
    ov = tiny_overrides(b, *shared_inputs(reference))
    run = cli("run", "prepare", "--config", CONFIG, *[f"--set={o}" for o in ov])
    kill_when(run, lambda: any((b / "prepared").rglob("*.wav")), _delay(0.0, 0.5))
    assert not (b / "split.json").exists(), "the kill must land before prepare finished"

    prepare_flow(CONFIG, ov)
    ref_rows, rows = manifest_rows(a / "manifest.parquet", a), manifest_rows(b / "manifest.parquet", b)
    assert rows == ref_rows  # no clip missing or duplicated, same lengths and status
    assert all(r["status"] == "prepared" for r in rows.values())
    assert json.loads((b / "split.json").read_text()) == json.loads((a / "split.json").read_text())
    for cid, r in rows.items():
        wa, _ = sf.read(a / ref_rows[cid]["prepared_audio"], dtype="float32")
        wb, _ = sf.read(b / r["prepared_audio"], dtype="float32")
        np.testing.assert_array_equal(wa, wb, err_msg=cid)
        # (the video keeps its own length; n_frames is the usable, audio-aligned count)
        assert count_video_frames(b / r["prepared_video"]) == count_video_frames(
            a / ref_rows[cid]["prepared_video"]
        )
    # whatever the killed run left half-written carries a temporary name nothing reads
    visible = {p.relative_to(b).as_posix() for p in (b / "prepared").rglob("*") if p.is_file()}
    visible = {v for v in visible if not Path(v).name.startswith(".")}
    assert visible == {r[k] for r in rows.values() for k in ("prepared_video", "prepared_audio")}


# ------------------------------------------------------------------------------------------ features
def _feature_root(reference: dict[str, Any], b: Path) -> list[str]:
    """A root holding the reference's manifest and split (prepared media stay in the reference root)."""
    b.mkdir(parents=True, exist_ok=True)
    for name in ("manifest.parquet", "split.json"):
        shutil.copy2(reference["root"] / name, b / name)
    return tiny_overrides(b, *shared_inputs(reference))


@pytest.mark.parametrize(
    ("flow", "families", "trigger", "delay"),
    [
        ("face-features", ["face"], "face.zarr", (0.0, 1.5)),
        (
            "audio-features",
            ["hubert_emotion", "hubert_content", "mel", "tokens"],
            "hubert_emotion.zarr/clips",
            (0.0, 2.5),
        ),
    ],
)
def test_killed_feature_flow_resumes_to_the_same_stores(
    reference, cli, tmp_path, flow, families, trigger, delay
):
    from emotalker.flows.cli import FLOWS, _load

    a, b = reference["root"], tmp_path / "root"
    ov = _feature_root(reference, b)
    manifest_before = (b / "manifest.parquet").read_bytes()
    run = cli("run", flow, "--config", CONFIG, *[f"--set={o}" for o in ov])
    kill_when(run, lambda: (b / "features" / trigger).exists(), _delay(*delay))

    result = _load(FLOWS[flow][0])(CONFIG, ov)
    ids = sorted(manifest_rows(a / "manifest.parquet", a))
    for family in families:
        assert_store_equal(a / "features", b / "features", family, ids)
        assert failures(b, family) == failures(a, family) == {}
    assert (b / "manifest.parquet").read_bytes() == manifest_before  # feature flows never touch it
    assert result["clips"] == len(ids)
    if flow == "audio-features":
        from emotalker.storage.zarr_store import FeatureStore
        from emotalker.tasks.features.kmeans import kmeans_fingerprint, load_kmeans

        ma, mb = (
            FeatureStore(a / "features", "tokens").get_meta(),
            FeatureStore(b / "features", "tokens").get_meta(),
        )
        assert ma["kmeans_path"] == mb["kmeans_path"]  # relative to the stores' root
        assert kmeans_fingerprint(load_kmeans(a / "features" / ma["kmeans_path"])) == kmeans_fingerprint(
            load_kmeans(b / "features" / mb["kmeans_path"])
        )


# ------------------------------------------------------------------------------------------ training
@pytest.fixture(scope="module")
def train_root(reference: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A root with the reference's features and split but its own MLflow store (stages trained here)."""
    b = tmp_path_factory.mktemp("train-kill")
    ov = _feature_root(reference, b)
    shutil.copytree(reference["root"] / "features", b / "features")
    return {"root": b, "overrides": ov}


def _checkpoint_step(path: Path) -> int:
    """Step of the checkpoint at ``path`` (replaced atomically by the trainer), -1 while there is none."""
    try:
        return int(load_checkpoint(path)["step"])
    except CheckpointError:
        return -1


@pytest.mark.parametrize("stage", ["vqvae", "lip", "transformer"])  # transformer needs the vqvae alias
def test_killed_training_stage_resumes_into_the_same_run_and_weights(reference, train_root, cli, stage):
    from emotalker.flows.cli import FLOWS, _load

    a, b, ov = reference["root"], train_root["root"], train_root["overrides"]
    ref = reference[stage]
    ref_dir = Path(ref["checkpoint_dir"])
    d = b / ref_dir.relative_to(a)  # same fingerprint -> same directory name
    settings = reference["cfg"].train.model_dump()[stage]
    every, steps = settings["checkpoint_every"], settings["steps"]
    target = RNG.randrange(every, steps - every + 1, every)  # a checkpoint before the last one
    run = cli("run", f"train-{stage}", "--config", CONFIG, *[f"--set={o}" for o in ov])
    # training is fast at this size: kill as soon as the checkpoint at the target step appears
    kill_when(run, lambda: _checkpoint_step(d / "last.pt") >= target, 0.0)
    assert not (d / "done.json").exists(), "the kill must land before the stage finished"
    run_id = json.loads((d / "run.json").read_text())["run_id"]
    killed_at = int(load_checkpoint(d / "last.pt")["step"])
    assert target <= killed_at < steps

    result = _load(FLOWS[f"train-{stage}"][0])(CONFIG, ov)
    assert result["run_id"] == run_id and result["resumed_from"] >= killed_at
    assert result["steps"] == ref["steps"]
    for name in ("last.pt", "best.pt"):
        assert_state_equal(load_checkpoint(ref_dir / name)["model"], load_checkpoint(d / name)["model"], name)
    assert result["best_step"] == ref["best_step"]

    mlflow.set_tracking_uri(f"sqlite:///{b}/mlflow.db")
    client = MlflowClient()
    runs = client.search_runs(
        [client.get_experiment_by_name(reference["cfg"].mlflow.experiment).experiment_id],
        filter_string=f"tags.stage = '{stage}'",
    )
    assert [r.info.run_id for r in runs] == [run_id]  # one run, resumed, not a second one
    assert runs[0].info.status == "FINISHED"
    version = client.get_model_version_by_alias(f"emotalker-{stage}", "best")
    assert version.run_id == run_id


# ---------------------------------------------------------------------------------------- generation
def test_killed_generation_reruns_to_the_same_outputs(reference, cli, tmp_path):
    import cv2
    from skimage import data

    from emotalker.flows.generate import generate_flow

    a, ov = reference["root"], reference["overrides"]
    image = tmp_path / "astronaut.jpg"
    cv2.imwrite(str(image), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    audio = next(iter(sorted((a / "prepared").rglob("*.wav"))))
    ref_out, out = tmp_path / "ref", tmp_path / "out"
    generate_flow(str(image), str(audio), str(ref_out), config=CONFIG, overrides=ov)

    run = cli(
        "generate",
        "--config",
        CONFIG,
        *[f"--set={o}" for o in ov],
        "--image",
        str(image),
        "--audio",
        str(audio),
        "--out",
        str(out),
    )
    kill_when(run, lambda: out.exists(), _delay(0.0, 0.3))
    _check_whole_outputs(out)  # nothing half-written under a final name
    generate_flow(str(image), str(audio), str(out), config=CONFIG, overrides=ov)
    np.testing.assert_array_equal(np.load(ref_out / "motion.npy"), np.load(out / "motion.npy"))
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in ref_out.iterdir())
    _check_whole_outputs(out)


def _check_whole_outputs(out: Path) -> None:
    import av
    import cv2
    import scipy.io

    for p in out.iterdir():
        assert not p.name.startswith("."), f"temporary file left: {p}"
        if p.suffix == ".npy":
            assert np.load(p).shape[1] == 70
        elif p.suffix == ".mat":
            # source.mat is the source crop in SadTalker's preprocess layout (70 + crop s, tx, ty)
            assert scipy.io.loadmat(p)["coeff_3dmm"].shape[1] == (73 if p.name == "source.mat" else 70)
        elif p.suffix == ".png":
            assert cv2.imread(str(p)) is not None
        elif p.suffix == ".mp4":
            with av.open(str(p)) as c:
                assert sum(1 for _ in c.decode(video=0)) > 0


# ------------------------------------------------------------------------------------- store writer
_WRITER = """
import sys
import numpy as np
from emotalker.storage.zarr_store import FeatureStore

store = FeatureStore(sys.argv[1], "face")
for i in range(10_000):
    v = float(i + 1)
    store.write_clip(
        f"clip{i % 7}",
        {"coeffs": np.full((600, 257), v, np.float32), "valid": np.full(600, i % 2 == 0)},
        attrs={"i": i},
        fingerprint=str(i),
    )
"""


@pytest.mark.parametrize("seed", [1, 2])
def test_killed_store_writer_leaves_only_whole_clips(tmp_path, seed):
    """SIGKILL a process rewriting clips in a loop: a clip reads as complete only with all its data."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from emotalker.storage.zarr_store import FeatureStore

    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path)], start_new_session=True)
    try:
        lock = tmp_path / "face.zarr.lock"
        t0 = time.monotonic()
        while not lock.exists() and time.monotonic() - t0 < 60:
            time.sleep(0.01)
        time.sleep(random.Random(seed).uniform(0.3, 1.5))
        assert proc.poll() is None, "the writer must still be running at the kill"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    store = FeatureStore(tmp_path, "face")
    complete = store.clip_ids()
    assert complete  # some clips were finished before the kill
    for cid in complete:
        attrs = store.read_attrs(cid)
        i = attrs["i"]
        assert attrs["fingerprint"] == str(i) and attrs["n_frames"] == 600
        got = store.read_clip(cid)
        np.testing.assert_array_equal(got["coeffs"], np.full((600, 257), float(i + 1), np.float32))
        np.testing.assert_array_equal(got["valid"], np.full(600, i % 2 == 0))
    # a rewrite after the kill replaces any partial group
    for cid in store.clip_ids(complete_only=False):
        store.write_clip(cid, {"coeffs": np.zeros((2, 257), np.float32)})
    assert store.clip_ids() == store.clip_ids(complete_only=False)
