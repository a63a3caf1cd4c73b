"""Tiny randomly initialised HuBERT checkpoints in the real Hugging Face on-disk formats.

No weights can be downloaded here, so the loading code is exercised against checkpoints that have the
same files (``config.json``, ``model.safetensors``, ``preprocessor_config.json``) and the same key layout
as the real ones (``superb/hubert-base-superb-er`` is a ``HubertForSequenceClassification`` whose encoder
lives under ``hubert.``). The conv feature extractor keeps HuBERT's kernels/strides so the 400/320 sample
framing holds; only the widths are small.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import HubertConfig, HubertForSequenceClassification, HubertModel, Wav2Vec2FeatureExtractor


def tiny_hubert_config(
    *,
    hidden_size: int = 32,
    num_hidden_layers: int = 10,
    num_attention_heads: int = 2,
    intermediate_size: int = 64,
    conv_dim: int = 16,
    feat_extract_norm: str = "group",
    num_labels: int = 4,
) -> HubertConfig:
    """HubertConfig with HuBERT's conv framing (kernels 10,3,3,3,3,2,2; strides 5,2,2,2,2,2,2); tiny."""
    if feat_extract_norm not in ("group", "layer"):
        raise ValueError(f"feat_extract_norm must be 'group' or 'layer', got {feat_extract_norm!r}")
    return HubertConfig(
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        intermediate_size=intermediate_size,
        conv_dim=(conv_dim,) * 7,
        conv_kernel=(10, 3, 3, 3, 3, 2, 2),
        conv_stride=(5, 2, 2, 2, 2, 2, 2),
        feat_extract_norm=feat_extract_norm,
        # Large HuBERT (layer-norm extractor) is the "stable layer norm" variant; base is not.
        do_stable_layer_norm=feat_extract_norm == "layer",
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        num_labels=num_labels,
        # The superb ER checkpoint uses a plain mean-pooled projector over the last layer.
        use_weighted_layer_sum=False,
        classifier_proj_size=16,
    )


def write_tiny_hubert(
    directory: str | Path,
    *,
    hidden_size: int = 32,
    num_hidden_layers: int = 10,
    num_attention_heads: int = 2,
    intermediate_size: int = 64,
    classifier: bool = False,
    feat_extract_norm: str = "group",
    do_normalize: bool | None = None,
    seed: int = 0,
) -> Path:
    """Save a random tiny HuBERT (and its feature-extractor settings) with ``save_pretrained``.

    ``classifier=True`` saves a ``HubertForSequenceClassification`` (keys prefixed ``hubert.``), like
    ``superb/hubert-base-superb-er``. ``do_normalize`` defaults to fairseq's rule: normalise the waveform
    only for layer-norm (large) models.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    cfg = tiny_hubert_config(
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        intermediate_size=intermediate_size,
        feat_extract_norm=feat_extract_norm,
    )
    torch.manual_seed(seed)
    model = HubertForSequenceClassification(cfg) if classifier else HubertModel(cfg)
    model.eval()
    model.save_pretrained(out)
    if do_normalize is None:
        do_normalize = feat_extract_norm == "layer"
    fe = Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=16000,
        padding_value=0.0,
        do_normalize=do_normalize,
        return_attention_mask=feat_extract_norm == "layer",
    )
    fe.save_pretrained(out)
    return out


def write_er_from_base(base_dir: str | Path, directory: str | Path, seed: int = 1) -> Path:
    """An emotion checkpoint built the way HF's s3prl conversion built ``superb/hubert-base-superb-er``.

    The conversion loads the frozen upstream (``facebook/hubert-base-ls960``) into a
    ``HubertForSequenceClassification``, sets only the projector/classifier head and saves a feature
    extractor with ``do_normalize=False``: so the encoder equals the base model's bit for bit.
    """
    base = HubertModel.from_pretrained(str(base_dir), local_files_only=True)
    torch.manual_seed(seed)
    er = HubertForSequenceClassification(base.config)
    er.hubert.load_state_dict(base.state_dict())
    er.eval()
    out = Path(directory)
    er.save_pretrained(out)
    Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=False, return_attention_mask=True
    ).save_pretrained(out)
    return out


def _repo_folder_name(repo_id: str) -> str:
    if repo_id.count("/") != 1 or any(not part for part in repo_id.split("/")):
        raise ValueError(f"repo_id must look like 'org/name', got {repo_id!r}")
    return "models--" + repo_id.replace("/", "--")


def write_tiny_hubert_to_hf_cache(
    cache_dir: str | Path, repo_id: str = "superb/hubert-base-superb-er", **kwargs: object
) -> Path:
    """Lay a tiny HuBERT out as the HF hub cache does; returns the snapshot directory.

    Layout: ``models--org--name/{blobs/<sha256>, snapshots/<commit>/<file> -> ../../blobs/<sha256>,
    refs/main}`` so ``from_pretrained(repo_id, local_files_only=True)`` resolves it with
    ``HF_HUB_CACHE=cache_dir`` (or ``cache_dir=``) and ``HF_HUB_OFFLINE=1``.
    """
    cache = Path(cache_dir)
    repo = cache / _repo_folder_name(repo_id)
    kwargs.setdefault("classifier", True)
    with tempfile.TemporaryDirectory() as tmp:
        src = write_tiny_hubert(Path(tmp) / "model", **kwargs)  # type: ignore[arg-type]
        files = sorted(p for p in src.iterdir() if p.is_file())
        digest = hashlib.sha1(repo_id.encode())
        for f in files:
            digest.update(f.name.encode())
            digest.update(f.read_bytes())
        commit = digest.hexdigest()  # 40 hex chars, like a git commit id
        snapshot = repo / "snapshots" / commit
        (repo / "blobs").mkdir(parents=True, exist_ok=True)
        snapshot.mkdir(parents=True, exist_ok=True)
        for f in files:
            blob_name = hashlib.sha256(f.read_bytes()).hexdigest()
            blob = repo / "blobs" / blob_name
            if not blob.exists():
                shutil.copyfile(f, blob)
            link = snapshot / f.name
            if link.exists() or link.is_symlink():
                link.unlink()
            try:
                link.symlink_to(Path("..") / ".." / "blobs" / blob_name)
            except OSError:  # filesystems without symlinks: the hub falls back to copies too
                shutil.copyfile(blob, link)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def convert_to_legacy_bin(directory: str | Path) -> Path:
    """Rewrite a saved checkpoint as a 2021-era ``pytorch_model.bin`` (weight-norm ``weight_g``/``weight_v``
    keys, no safetensors), the format of older hub uploads such as the superb models."""
    from safetensors.torch import load_file

    d = Path(directory)
    st = d / "model.safetensors"
    if not st.is_file():
        raise FileNotFoundError(f"no model.safetensors in {d}")
    renamed = {
        k.replace("parametrizations.weight.original0", "weight_g").replace(
            "parametrizations.weight.original1", "weight_v"
        ): v
        for k, v in load_file(st).items()
    }
    torch.save(renamed, d / "pytorch_model.bin")
    st.unlink()
    return d / "pytorch_model.bin"
