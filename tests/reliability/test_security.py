"""Security checks (issue 9): no code runs from a checkpoint, servers bind loopback, no secrets leak.

Archive extraction safety (path traversal, absolute paths, symlinks/hard links outside the target,
device files, unsafe members inside nested tars) is covered by ``tests/data/test_extract.py``
(``test_unsafe_members_are_rejected_and_nothing_extracted``,
``test_symlink_chain_and_write_through_link_are_rejected``,
``test_unsafe_member_inside_nested_tar_aborts_actor_extraction``); the gap it leaves, a MEAD actor
archive with an unsafe member going through the whole ``extract_mead_actor`` entry point, is below.
"""

from __future__ import annotations

import io
import re
import shutil
import tarfile
from pathlib import Path
from typing import Any

import pytest
import torch

from emotalker.configs.schema import load_config
from emotalker.configs.secrets import redact_secrets

REPO = Path(__file__).resolve().parents[2]
# the installed package's source folders (the repository root maps them into ``emotalker.*``)
PACKAGE_DIRS = [REPO / d for d in ("emotalker", "configs", "flows", "models", "storage", "tasks")]


def _package_files() -> list[tuple[str, Path]]:
    return [(py.relative_to(REPO).as_posix(), py) for d in PACKAGE_DIRS for py in sorted(d.rglob("*.py"))]


class _Payload:
    """Unpickling this calls ``Path.write_text(marker, "pwned")``: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.write_text, (self.marker, "pwned"))


def _malicious(path: Path, marker: Path, key: str | None = None) -> Path:
    payload: Any = _Payload(marker)
    torch.save({key: payload} if key else payload, path)
    return path


def test_payload_really_runs_code_when_unpickled(tmp_path):
    """Guard for the tests below: the payload is live, so refusing it means something."""
    marker = tmp_path / "marker"
    torch.load(_malicious(tmp_path / "evil.pt", marker), weights_only=False)
    assert marker.read_text() == "pwned"


def test_training_checkpoint_loader_refuses_pickled_code(tmp_path):
    from emotalker.tasks.training.checkpoint import CheckpointError, load_checkpoint

    marker = tmp_path / "marker"
    path = _malicious(tmp_path / "last.pt", marker, "model")
    with pytest.raises(CheckpointError, match="last.pt"):
        load_checkpoint(path)
    assert not marker.exists()


def test_deep3dface_loader_refuses_pickled_code(tmp_path):
    from emotalker.models.deep3dface import load_recon_net

    marker = tmp_path / "marker"
    path = _malicious(tmp_path / "epoch_20.pth", marker, "net_recon")
    with pytest.raises(Exception, match="epoch_20.pth"):
        load_recon_net(path)
    assert not marker.exists()


def test_sadtalker_audio2exp_loader_refuses_pickled_code(tmp_path):
    from emotalker.models.lip import ExpNet, load_sadtalker_audio2exp

    marker = tmp_path / "marker"
    path = _malicious(tmp_path / "auido2exp_00300-model.pth", marker, "model")
    with pytest.raises(Exception, match="auido2exp_00300-model.pth|weights_only|Unsupported"):
        load_sadtalker_audio2exp(ExpNet(), path)
    assert not marker.exists()


@pytest.fixture(scope="module")
def face_assets(tmp_path_factory):
    from emotalker.tasks.demo.standins.fake_face_assets import write_fake_face_assets

    d = tmp_path_factory.mktemp("face-assets")
    return write_fake_face_assets(d / "deep3dface", d / "torch_home")


@pytest.mark.parametrize("which", ["sfd", "fan"])
def test_face_alignment_models_refuse_pickled_code(face_assets, tmp_path, which):
    """The detector is loaded by face-alignment itself, the FAN by our loader: both refuse pickles."""
    from emotalker.tasks.features.face_coeffs import LandmarkDetector

    fa_dir = tmp_path / "checkpoints"
    shutil.copytree(face_assets["fa_dir"], fa_dir)
    marker = tmp_path / "marker"
    _malicious(fa_dir / Path(face_assets[which]).name, marker)
    with pytest.raises(Exception):  # noqa: B017 - torch's UnpicklingError or face-alignment's wrapper
        LandmarkDetector(model_dir=fa_dir, face_detector="sfd")
    assert not marker.exists()


_LOAD_CALL = re.compile(
    r"\b(torch\.load|pickle\.loads?|joblib\.load|np\.load|numpy\.load|cloudpickle\.loads?)\("
)
# joblib is the k-means model the pipeline writes itself under features/kmeans (never a downloaded file)
_ALLOWED_UNSAFE = {("tasks/features/kmeans.py", "joblib.load")}


def test_every_deserialisation_in_the_package_is_safe():
    """Grep the code base: torch.load always weights_only=True, np.load never allows pickles."""
    found = []
    for rel, py in _package_files():
        text = py.read_text()
        for m in _LOAD_CALL.finditer(text):
            call = text[m.start() : text.find("\n", m.end()) + 200]
            depth, end = 0, m.end() - 1
            for i, ch in enumerate(call[len(m.group(0)) - 1 :], start=len(m.group(0)) - 1):
                depth += ch == "("
                depth -= ch == ")"
                if depth == 0:
                    end = i
                    break
            args = call[: end + 1]
            name = m.group(1)
            found.append((rel, name))
            if name == "torch.load":
                assert "weights_only=True" in args, f"{rel}: {args}"
            elif name in ("np.load", "numpy.load"):
                assert "allow_pickle=False" in args or "allow_pickle" not in args, f"{rel}: {args}"
            else:
                assert (rel, name) in _ALLOWED_UNSAFE, f"{rel}: unpickling call {args}"
    assert any(n == "torch.load" for _, n in found)  # the grep does see the loaders


# ----------------------------------------------------------------------------------------- archives
def test_mead_actor_archive_with_traversal_member_is_rejected_whole(tmp_path):
    from emotalker.tasks.data.extract import extract_mead_actor

    archive = tmp_path / "M003.tar"
    with tarfile.open(archive, "w") as tar:
        for name, data in (("M003/video/front/angry/level_1/001.mp4", b"x"), ("../../escape.txt", b"pwned")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    raw = tmp_path / "raw"
    with pytest.raises(Exception, match=r"escape\.txt"):
        extract_mead_actor(archive, raw)
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path.parent / "escape.txt").exists()
    assert not list(raw.rglob("*.mp4"))  # nothing of the actor half-extracted under its final name


# ------------------------------------------------------------------------------------------ servers
def test_local_dask_cluster_listens_on_loopback_only():
    import psutil

    from emotalker.configs.schema import DaskConfig
    from emotalker.tasks.features.cluster import dask_client

    with dask_client(DaskConfig(n_workers=1, threads_per_worker=1)) as client:
        info = client.scheduler_info()
        assert info["address"].startswith("tcp://127.0.0.1:")
        assert info["workers"] and all(a.startswith("tcp://127.0.0.1:") for a in info["workers"])
        me = psutil.Process()
        listening = []
        for proc in [me, *me.children(recursive=True)]:
            try:
                conns = proc.net_connections(kind="inet")
            except psutil.Error:
                continue
            listening += [c.laddr.ip for c in conns if c.status == psutil.CONN_LISTEN]
        assert listening and set(listening) <= {"127.0.0.1"}, listening


def test_no_server_in_the_package_binds_all_interfaces():
    text = "\n".join(py.read_text() for _, py in _package_files())
    assert "0.0.0.0" not in text and "host=''" not in text and 'host=""' not in text


# ------------------------------------------------------------------------------------------ secrets
SECRET_OVERRIDES = [
    "mlflow.tracking_uri=https://alice:hunter2pass@mlflow.example.com:5000",
    "download.urls_file=https://mirror.example.com/mead/urls.yaml?token=tok-SECRET-123&x=1",
    "dask.address=tcp://bob:dasksecret@10.0.0.5:8786",
]
SECRETS = ("hunter2pass", "tok-SECRET-123", "dasksecret")


@pytest.mark.parametrize("override", SECRET_OVERRIDES)
def test_config_values_with_credentials_are_refused_without_echoing_them(override):
    """A config is a Prefect parameter, log line and MLflow params: credentials may not enter it."""
    from emotalker.configs.schema import ConfigError

    key = override.split("=", 1)[0]
    with pytest.raises(ConfigError) as info:
        load_config("configs/demo.yaml", [override])
    msg = str(info.value)
    assert f"{key} holds credentials" in msg and "MLFLOW_TRACKING_PASSWORD" in msg
    for secret in SECRETS:
        assert secret not in msg
        assert info.value.__cause__ is None or secret not in str(info.value.__cause__)


def test_config_params_for_mlflow_track_every_value():
    from emotalker.tasks.tracking import config_params

    params = config_params(
        load_config("configs/demo.yaml", ["mlflow.tracking_uri=https://mlflow.example.com"])
    )
    assert params["mlflow.tracking_uri"] == "https://mlflow.example.com"
    assert params["vqvae.codebook_size"] == "64"


def test_redact_secrets_keeps_plain_urls():
    assert redact_secrets("sqlite:///data/demo/mlflow.db") == "sqlite:///data/demo/mlflow.db"
    assert (
        redact_secrets("s3://b/k.tar?X-Amz-Signature=abc&v=2")
        == "s3://b/k.tar?X-Amz-Signature=<redacted>&v=2"
    )
    assert redact_secrets("http://u:p@h/x?api_key=1") == "http://<redacted>@h/x?api_key=<redacted>"


def test_download_errors_do_not_echo_tokens(tmp_path):
    from emotalker.tasks.data.download import ArchiveSpec, DownloadError, download_archive

    spec = ArchiveSpec(
        url="http://127.0.0.1:9/M003.tar?token=tok-SECRET-123", name="M003.tar", sha256=None, size=None
    )
    with pytest.raises(DownloadError) as info:
        download_archive(spec, tmp_path, retries=0, backoff_s=0, timeout_s=2)
    assert "tok-SECRET-123" not in str(info.value) and "M003.tar" in str(info.value)
