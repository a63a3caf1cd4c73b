"""Features on an S3-compatible bucket (moto on loopback), then training and generation on a "second
machine": an empty ``paths.root`` and nothing but the bucket URL and the storage options; the manifest,
split, k-means model and failure records all come from the bucket.
No credential reaches a log line, the MLflow store or any file the pipeline writes."""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from emotalker_testkit.pipeline import CONFIG, tiny_overrides

pytestmark = pytest.mark.slow


def test_features_in_a_bucket_train_and_generate_on_a_second_machine(
    prefect_server, s3_server, tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture
) -> None:
    import boto3

    from benchmarks.s3server import TEST_CREDENTIALS
    from emotalker.flows.demo import demo_data_flow
    from emotalker.flows.featurize import features_flow
    from emotalker.flows.generate import generate_flow
    from emotalker.flows.ingest import download_flow, prepare_flow
    from emotalker.flows.train import train_lip, train_transformer, train_vqvae
    from emotalker.storage.zarr_store import StoreRoot

    caplog.set_level(logging.INFO)  # what the pipeline logs by default
    prefix = f"run-{uuid.uuid4().hex[:8]}/features"
    remote = [
        f"paths.features_url=s3://emotalker/{prefix}",
        f"paths.storage_options={json.dumps(s3_server.storage_options)}",
        "synthetic.emotions=[angry, neutral]",
        "synthetic.levels=[3]",
        "train.vqvae.steps=10",
        "train.transformer.steps=6",
        "train.lip.steps=4",
    ]
    first, second = tmp_path / "machine1", tmp_path / "machine2"
    ov1 = [*tiny_overrides(first), *remote]
    demo_data_flow(CONFIG, ov1)
    download_flow(CONFIG, ov1)
    prepare_flow(CONFIG, ov1)
    mark = s3_server.mark()
    features = features_flow(CONFIG, ov1)
    assert features["face"]["failed"] == 0 and features["audio"]["tokens"]["failed"] == 0
    n_clips = features["face"]["clips"]
    assert s3_server.requests(mark, under=".zarr/")["HEAD"] == 0  # no existence probes of store objects

    s3 = boto3.client("s3", endpoint_url=s3_server.endpoint, region_name="us-east-1")
    keys = [
        o["Key"]
        for p in s3.get_paginator("list_objects_v2").paginate(Bucket="emotalker", Prefix=prefix)
        for o in p.get("Contents", [])
    ]
    assert any(k.endswith(".joblib") and "/kmeans/" in k for k in keys)  # the model sits beside the stores
    assert not list((first / "features").rglob("*.zarr")) and not list(first.rglob("*.joblib"))

    assert {"manifest.parquet", "split.json", "face.failures.json"} <= {k.rsplit("/", 1)[-1] for k in keys}

    # the second machine: an empty root (own MLflow), the bucket URL and its storage options, no copies
    second.mkdir()
    ov2 = [*ov1, f"paths.root={second}", f"mlflow.tracking_uri=sqlite:///{second}/mlflow.db"]
    meta = StoreRoot(f"s3://emotalker/{prefix}", s3_server.storage_options).store("tokens").get_meta()
    assert not Path(meta["kmeans_path"]).is_absolute()
    train_vqvae(CONFIG, ov2)
    train_lip(CONFIG, ov2)
    train_transformer(CONFIG, ov2)

    import cv2
    from skimage import data

    face = tmp_path / "face.jpg"
    cv2.imwrite(str(face), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    speech = tmp_path / "speech.wav"
    t = np.arange(16_000) / 16_000
    sf.write(
        speech,
        (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32),
        16_000,
    )
    out = tmp_path / "gen"
    result = generate_flow(str(face), str(speech), str(out), config=CONFIG, overrides=ov2)
    assert result["frames"] == 25 and np.load(out / "motion.npy").shape == (25, 70)
    assert not list(second.rglob("*.joblib")) and not list(second.rglob("*.zarr"))
    assert not (second / "manifest.parquet").exists() and not (second / "split.json").exists()
    assert n_clips > 0

    secrets = [v.encode() for v in TEST_CREDENTIALS.values()]
    logged = caplog.text + "".join(capfd.readouterr())
    assert not any(s.decode() in logged for s in secrets)
    for root in (first, second):
        for f in root.rglob("*"):
            if f.is_file() and f.stat().st_size < 64 << 20:
                blob = f.read_bytes()
                assert not any(s in blob for s in secrets), f
