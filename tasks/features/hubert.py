"""HuBERT hidden states for the two audio branches (emotion model and content/k-means model).

Loading is offline only (``local_files_only=True``): a local directory or a Hugging Face cache id.
A ``HubertForSequenceClassification`` checkpoint (``superb/hubert-base-superb-er``) loads into a
``HubertModel`` by its ``hubert.`` prefix; its projector/classifier weights are ignored.

Batching rule (so batched output equals per-clip output): clips are sorted by length and grouped into
buckets whose clips are at most ``MAX_PADDING`` shorter than the bucket's longest (the feature flows hand
over chunks of length-sorted clips, so buckets are nearly full and padding is small).
  * layer-norm extractors (``feat_extract_norm == "layer"``, HuBERT large) take an attention mask, so
    clips of different lengths are zero-padded together; every valid frame only sees its own samples and
    the transformer masks the padding.
  * group-norm extractors (HuBERT base, incl. the superb ER model) normalise the first conv layer over
    the whole time axis, so padding the waveform would change every frame. Clips of different lengths
    share a batch from the transformer on: the conv feature encoder runs clip by clip, its frames are
    zero-padded and the encoder masks the padding. That is exact: the encoder zeroes padded frames before
    its positional convolution, which is what the convolution's own zero padding shows a clip alone, and
    attention never reads a padded frame.
Each output is cropped to ``hubert_frames(len)``. On the CPU the conv feature encoder runs clip by clip
for every model, equal lengths too: in a batch its 512-channel intermediates fall out of cache, so one
clip at a time is faster there (README, benchmarks), while the transformer still gains from the batch.

Two further savings that leave every output unchanged:
  * the encoder runs only as deep as the deepest requested layer (layer 9 of 12 for content features);
  * two checkpoints whose encoders are identical (same weights, same encoder settings, same waveform
    normalisation) share one forward pass. The superb ER checkpoints are such a case: HF's s3prl
    conversion copies the frozen upstream (``facebook/hubert-base-ls960``) into the classifier unchanged
    and adds only the projector/classifier head.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

import numpy as np
import torch

from emotalker.configs.constants import HUBERT_HOP, HUBERT_WIN, SAMPLE_RATE, WaveformNormalization
from emotalker.tasks.adapters.transformers_hubert import model_view
from emotalker.tasks.features.audio_io import validate_audio
from emotalker.tasks.features.hubert_files import HubertModelNotFound, resolve_model_dir

log = logging.getLogger(__name__)

MAX_PADDING = 0.1  # a batched clip is at most 10% shorter than its batch's longest (padding compute)


@dataclass(frozen=True)
class HubertSettings:
    """What the extractor needs to know about a loaded checkpoint."""

    name: str  # as requested (path or HF id)
    path: Path  # resolved local directory
    do_normalize: bool  # zero-mean/unit-variance per clip before the model (Wav2Vec2FeatureExtractor)
    sampling_rate: int
    uses_attention_mask: bool  # feat_extract_norm == "layer"
    num_layers: int  # hidden_states has num_layers + 1 entries
    hidden_size: int
    encoder_digest: str = ""  # weights + encoder settings + normalisation: equal digests share a pass


# HubertConfig fields that change what the encoder computes in eval mode (dropouts, masking, heads and
# labels do not). Shapes are covered by the weights themselves.
_ENCODER_FIELDS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "layer_norm_eps",
    "feat_extract_norm",
    "feat_extract_activation",
    "conv_dim",
    "conv_stride",
    "conv_kernel",
    "conv_bias",
    "num_conv_pos_embeddings",
    "num_conv_pos_embedding_groups",
    "conv_pos_batch_norm",
    "do_stable_layer_norm",
    "feat_proj_layer_norm",
)


def encoder_digest(model: torch.nn.Module, do_normalize: bool) -> str:
    """Content hash of what maps a waveform to hidden states: encoder weights, settings, normalisation.

    Two checkpoints with equal digests produce identical hidden states, whatever their heads or names.
    """
    h = hashlib.blake2b(digest_size=20)
    cfg = model.config
    settings = {k: getattr(cfg, k, None) for k in _ENCODER_FIELDS}
    h.update(json.dumps({"settings": settings, "do_normalize": do_normalize}, sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().contiguous().cpu()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy() if t.numel() else b"")
    return h.hexdigest()


def pass_sharing(
    first: tuple[torch.nn.Module, HubertSettings], second: tuple[torch.nn.Module, HubertSettings]
) -> dict[str, object]:
    """Whether two loaded checkpoints share one forward pass in the feature stage, and if not, why.

    Run on the real checkpoints (``emotalker hubert-check``) to learn which speed-up applies: the paper's
    pair shares when loaded with the same waveform normalisation (always, by the pretraining rule).
    """
    (model_a, a), (_, b) = first, second
    if a.encoder_digest == b.encoder_digest:
        reason = "same encoder weights, encoder settings and waveform normalisation"
    elif encoder_digest(model_a, b.do_normalize) == b.encoder_digest:
        reason = (
            "same encoder, but the waveform normalisation differs "
            f"({a.name}: do_normalize={a.do_normalize}, {b.name}: do_normalize={b.do_normalize})"
        )
    else:
        reason = "different encoder weights or encoder settings"
    return {
        "shared_pass": a.encoder_digest == b.encoder_digest,
        "reason": reason,
        "checkpoints": [
            {"name": s.name, "path": str(s.path), "do_normalize": s.do_normalize, "digest": s.encoder_digest}
            for s in (a, b)
        ],
    }


def hubert_frames(n_samples: int) -> int:
    """HuBERT output frames for ``n_samples`` at 16 kHz: floor((N-400)/320)+1, 0 when N < 400."""
    n = int(n_samples)
    if n < HUBERT_WIN:
        return 0
    return (n - HUBERT_WIN) // HUBERT_HOP + 1


class _DropLoadReport(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in record.getMessage()


@contextmanager
def _quiet_load_report() -> Iterator[None]:
    """Drop transformers' load-report warning: an ER checkpoint's head is expectedly unused, missing
    encoder weights are an error raised by ``load_hubert`` and size mismatches raise in transformers.

    A filter, not a level: transformers runs (and logs) extra checks when that logger's level is raised.
    """
    report_logger = logging.getLogger("transformers.modeling_utils")
    drop = _DropLoadReport()
    report_logger.addFilter(drop)
    try:
        yield
    finally:
        report_logger.removeFilter(drop)


def load_hubert(
    name_or_path: str | Path,
    device: str | torch.device = "cpu",
    cache_dir: str | Path | None = None,
    normalization: WaveformNormalization = "pretraining",
) -> tuple[torch.nn.Module, HubertSettings]:
    """Load a HuBERT encoder in eval mode plus its preprocessing settings.

    ``do_normalize`` (per-clip zero mean, unit variance): with ``normalization="pretraining"`` as fairseq
    pretrained and s3prl fine-tuned the checkpoint, i.e. only layer-norm (large) models normalise, which
    is also what the HuBERT k-means recipe's feature dump does; with ``"preprocessor_config"`` as the
    checkpoint's ``preprocessor_config.json`` says (that rule when the file is absent). Raises
    HubertModelNotFound naming the id when the checkpoint is absent, and ValueError when the checkpoint
    lacks encoder weights (rather than silently using random ones).
    """
    modes = get_args(WaveformNormalization)
    if normalization not in modes:
        raise ValueError(f"normalization must be one of {modes}, got {normalization!r}")
    from transformers import HubertModel

    model_dir = resolve_model_dir(name_or_path, cache_dir)
    try:
        with _quiet_load_report():
            model, info = HubertModel.from_pretrained(
                str(model_dir), local_files_only=True, output_loading_info=True
            )
    except OSError as exc:  # e.g. config.json present but no weights file
        raise HubertModelNotFound(
            f"cannot load weights for {name_or_path!r} from {model_dir}: {exc}"
        ) from exc
    missing = list(info.get("missing_keys", []))
    if missing:
        raise ValueError(
            f"{name_or_path!r} ({model_dir}) is missing {len(missing)} HuBERT encoder weights, "
            f"e.g. {missing[:3]}"
        )
    ignored = sorted({k.split(".")[0] for k in info.get("unexpected_keys", [])})
    if ignored:
        log.info("%s: ignoring the checkpoint's %s weights (not part of the encoder)", name_or_path, ignored)
    model.eval()
    cfg = model.config
    uses_mask = getattr(cfg, "feat_extract_norm", "group") == "layer"
    do_normalize = uses_mask
    sampling_rate = SAMPLE_RATE
    pre = model_dir / "preprocessor_config.json"
    if pre.is_file():
        fe = json.loads(pre.read_text())
        if normalization == "preprocessor_config":
            do_normalize = bool(fe.get("do_normalize", do_normalize))
        sampling_rate = int(fe.get("sampling_rate", sampling_rate))
    if sampling_rate != SAMPLE_RATE:
        raise ValueError(
            f"{name_or_path!r} expects {sampling_rate} Hz audio; this pipeline uses {SAMPLE_RATE}"
        )
    settings = HubertSettings(
        name=str(name_or_path),
        path=model_dir,
        do_normalize=do_normalize,
        sampling_rate=sampling_rate,
        uses_attention_mask=uses_mask,
        num_layers=int(cfg.num_hidden_layers),
        hidden_size=int(cfg.hidden_size),
        encoder_digest=encoder_digest(model, do_normalize),  # on the CPU copy, before moving
    )
    model.to(device)
    return model, settings


def _normalize(wave: np.ndarray) -> np.ndarray:
    """Wav2Vec2FeatureExtractor's per-clip zero-mean unit-variance normalisation."""
    return ((wave - wave.mean()) / np.sqrt(wave.var() + 1e-7)).astype(np.float32)


def _check_layers(layers: Sequence[int], n_layers: int) -> list[int]:
    if not layers:
        raise ValueError("layers must name at least one hidden-state index")
    out = []
    for k in layers:
        if not -(n_layers + 1) <= int(k) <= n_layers:
            raise ValueError(f"layer {k} out of range: model has hidden_states[0..{n_layers}]")
        out.append(int(k))
    return out


def encoder_depth(config: object, layers: Sequence[int]) -> int:
    """Transformer layers to run so that ``hidden_states[k]`` is exact for every requested k.

    Base models: k layers, at least one (transformers records ``hidden_states`` through the layers, so
    zero layers would record none). Stable-layer-norm (large) models in some transformers versions apply
    their final layer norm to the last recorded entry, so one more layer runs to keep
    ``hidden_states[k]`` the raw layer output.
    """
    n = int(config.num_hidden_layers)  # type: ignore[attr-defined]
    deepest = max(int(k) % (n + 1) for k in layers)  # -1 -> n
    if getattr(config, "do_stable_layer_norm", False):
        deepest += 1
    return min(n, max(1, deepest))


class _PrecomputedFeatures(torch.nn.Module):
    """Stands in for the conv feature encoder of a view: returns frames already computed clip by clip."""

    def __init__(self, features: torch.Tensor) -> None:
        super().__init__()
        self.features = features

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        return self.features


def per_clip_conv_default(device: str | torch.device) -> bool:
    """Whether every batch runs the conv feature encoder clip by clip (module docstring): on the CPU,
    where that is faster; elsewhere only batches that need it (group-norm models, mixed lengths)."""
    return torch.device(device).type == "cpu"


def make_batches(
    lengths: Sequence[int],
    batch_seconds: float,
    equal_length_only: bool = False,
    max_padding: float = MAX_PADDING,
) -> list[list[int]]:
    """Group clip indices into batches of at most ``batch_seconds`` of padded audio (one clip minimum).

    Clips are sorted by length (longest first); a clip joins the current batch only if it is at most
    ``max_padding`` (a fraction) shorter than the batch's longest, or, with ``equal_length_only``, exactly
    as long (group-norm models batched without a per-clip conv encoder, see module docstring).
    """
    if batch_seconds <= 0:
        raise ValueError(f"batch_seconds must be positive, got {batch_seconds}")
    if not 0.0 <= max_padding < 1.0:
        raise ValueError(f"max_padding must be in [0, 1), got {max_padding}")
    budget = batch_seconds * SAMPLE_RATE
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        if cur:
            max_len = lengths[cur[0]]  # longest in the batch (sorted descending)
            close = lengths[i] == max_len if equal_length_only else lengths[i] >= (1 - max_padding) * max_len
            if close and (len(cur) + 1) * max_len <= budget:
                cur.append(i)
                continue
            batches.append(cur)
        cur = [i]
    if cur:
        batches.append(cur)
    return batches


def _run_batch(
    model: torch.nn.Module,
    waves: list[np.ndarray],
    layers: list[int],
    device: str | torch.device,
    use_mask: bool,
    per_clip_conv: bool = False,
) -> list[dict[int, np.ndarray]]:
    """One forward pass over ``waves`` zero-padded to the longest.

    ``use_mask``: pass the sample mask (layer-norm models). ``per_clip_conv``: run the conv feature
    encoder clip by clip and zero-pad its frames; where lengths differ, the padded frames are masked
    from the transformer on (exact for group-norm models too).
    """
    max_len = max(w.size for w in waves)
    x = np.zeros((len(waves), max_len), dtype=np.float32)
    mask = np.zeros((len(waves), max_len), dtype=np.int64)
    for b, w in enumerate(waves):
        x[b, : w.size] = w
        mask[b, : w.size] = 1
    inputs = torch.from_numpy(x).to(device)
    per_clip_conv = per_clip_conv and len(waves) > 1
    kwargs = {}
    if use_mask or (per_clip_conv and len({w.size for w in waves}) > 1):  # equal lengths need no mask
        kwargs["attention_mask"] = torch.from_numpy(mask).to(device)
    with torch.inference_mode():
        if per_clip_conv:
            frames = [model.feature_extractor(inputs[b : b + 1, : w.size]) for b, w in enumerate(waves)]
            padded = frames[0].new_zeros((len(waves), frames[0].shape[1], max(f.shape[-1] for f in frames)))
            for b, f in enumerate(frames):
                padded[b, :, : f.shape[-1]] = f[0]
            model = model_view(model, feature_extractor=_PrecomputedFeatures(padded))
        out = model(inputs, output_hidden_states=True, return_dict=True, **kwargs)
    hidden = out.hidden_states
    full = int(model.config.num_hidden_layers) + 1
    results: list[dict[int, np.ndarray]] = []
    for b, w in enumerate(waves):
        n = hubert_frames(w.size)
        # absolute indices: a truncated view shares the full model's config but has fewer entries
        results.append({k: hidden[k % full][b, :n].float().cpu().numpy() for k in layers})
    return results


def _prepare(waves: Sequence[np.ndarray], normalize: bool) -> list[np.ndarray]:
    prepared = []
    for i, w in enumerate(waves):
        arr = validate_audio(w, SAMPLE_RATE, name=f"clip {i}")
        prepared.append(_normalize(arr) if normalize else arr)
    return prepared


def extract_hubert(
    model: torch.nn.Module,
    waves: Sequence[np.ndarray],
    layers: Sequence[int],
    *,
    device: str | torch.device = "cpu",
    batch_seconds: float = 120.0,
    normalize: bool = False,
    mixed_lengths: bool = True,
    max_padding: float = MAX_PADDING,
    chunk_seconds: float | None = None,
    context_seconds: float = 5.0,
) -> list[dict[int, np.ndarray]]:
    """Hidden states ``hidden_states[k]`` (output of layer k; 0 = before layer 1) for each clip.

    Returns, in input order, ``{k: (hubert_frames(len_i), hidden) float32}`` keyed by the layer indices as
    given (so ``-1`` stays ``-1``). Batches follow the rule in the module docstring, so results match
    ``extract_hubert_single`` up to float round-off. ``mixed_lengths=False`` batches only clips of equal
    length (and, for group-norm models off the CPU, runs the conv encoder on the whole batch);
    ``max_padding`` bounds the padding of mixed-length batches (``make_batches``). Clips longer than
    ``chunk_seconds + 2 * context_seconds`` run alone through ``extract_hubert_chunked`` (bounded memory).
    """
    ks = _check_layers(layers, int(model.config.num_hidden_layers))
    prepared = _prepare(waves, normalize)
    results: list[dict[int, np.ndarray] | None] = [None] * len(prepared)
    if chunk_seconds is not None:
        longest = (chunk_seconds + 2 * context_seconds) * SAMPLE_RATE
        for i, w in enumerate(prepared):
            if w.size > longest:  # already normalised above
                results[i] = extract_hubert_chunked(
                    model, w, ks, device=device, chunk_seconds=chunk_seconds, context_seconds=context_seconds
                )
    use_mask = getattr(model.config, "feat_extract_norm", "group") == "layer"
    per_clip_conv = (mixed_lengths and not use_mask) or per_clip_conv_default(device)
    model = model_view(model, depth=encoder_depth(model.config, ks))
    todo = [i for i, r in enumerate(results) if r is None]
    sizes = [prepared[i].size for i in todo]
    batches = make_batches(sizes, batch_seconds, equal_length_only=not mixed_lengths, max_padding=max_padding)
    for pos in batches:
        idx = [todo[p] for p in pos]
        batch = [prepared[i] for i in idx]
        for i, r in zip(idx, _run_batch(model, batch, ks, device, use_mask, per_clip_conv), strict=True):
            results[i] = r
    return [r for r in results if r is not None]


def _conv_features_chunked(fe: torch.nn.Module, wave: torch.Tensor, chunk_frames: int) -> torch.Tensor:
    """The conv feature encoder over a long waveform, ``chunk_frames`` output frames at a time: (C, T).

    Exact: a chunk starting at sample 320j yields frames j.. unchanged (every conv stride divides 320 and
    the convolutions have no padding). A group-norm first layer (HuBERT base) normalises each channel over
    the whole clip, so its statistics are gathered over the whole clip first, chunk by chunk.
    """
    layers = list(fe.conv_layers)
    first = layers[0]
    n_frames = hubert_frames(wave.numel())
    norm = getattr(first, "layer_norm", None)
    stats = None
    if isinstance(norm, torch.nn.GroupNorm):
        if norm.num_groups != norm.num_channels:
            raise ValueError(
                "chunked HuBERT needs a per-channel group norm (HuBERT's) in the first conv layer"
            )
        k0, s0 = first.conv.kernel_size[0], first.conv.stride[0]
        n0 = (wave.numel() - k0) // s0 + 1  # first-layer frames of the whole clip
        step = chunk_frames * (HUBERT_HOP // s0)
        total = torch.zeros(norm.num_channels, dtype=torch.float64, device=wave.device)
        total_sq = torch.zeros_like(total)
        for m0 in range(0, n0, step):
            m1 = min(n0, m0 + step)
            y = first.conv(wave[None, None, m0 * s0 : (m1 - 1) * s0 + k0])[0].double()
            total += y.sum(1)
            total_sq += (y * y).sum(1)
        mean = total / n0
        var = (total_sq / n0 - mean * mean).clamp(min=0)
        stats = (mean.float(), torch.rsqrt(var + norm.eps).float())
    chunks = []
    for j0 in range(0, n_frames, chunk_frames):
        j1 = min(n_frames, j0 + chunk_frames)
        h = wave[None, None, j0 * HUBERT_HOP : (j1 - 1) * HUBERT_HOP + HUBERT_WIN]
        if stats is not None:
            y = first.conv(h)
            y = (y - stats[0][None, :, None]) * stats[1][None, :, None]
            h = first.activation(y * norm.weight[None, :, None] + norm.bias[None, :, None])
        else:
            h = first(h)
        for layer in layers[1:]:
            h = layer(h)
        chunks.append(h[0])
    return torch.cat(chunks, dim=1)


def extract_hubert_chunked(
    model: torch.nn.Module,
    wave: np.ndarray,
    layers: Sequence[int],
    *,
    device: str | torch.device = "cpu",
    chunk_seconds: float = 30.0,
    context_seconds: float = 5.0,
    normalize: bool = False,
) -> dict[int, np.ndarray]:
    """Hidden states of one clip of any length with memory bounded by ``chunk_seconds``.

    The conv encoder runs chunk by chunk (exact, see ``_conv_features_chunked``); the transformer runs on
    windows of ``chunk_seconds`` of frames plus ``context_seconds`` of frames on each side, keeping only
    the window's own frames. Self-attention then misses what lies beyond the context, so frames differ
    from one pass over the whole clip by a little (tests/features/test_hubert.py states the tolerance);
    time grows linearly with length instead of quadratically. Frame count is ``hubert_frames(len)``.
    """
    if chunk_seconds <= 0 or context_seconds < 0:
        raise ValueError(
            f"chunk_seconds must be > 0 and context_seconds >= 0, got {chunk_seconds}, {context_seconds}"
        )
    ks = _check_layers(layers, int(model.config.num_hidden_layers))
    w = _prepare([wave], normalize)[0]
    n = hubert_frames(w.size)
    if n == 0:
        raise ValueError(f"clip of {w.size} samples is shorter than one HuBERT frame ({HUBERT_WIN} samples)")
    fps = SAMPLE_RATE / HUBERT_HOP
    chunk = max(1, round(chunk_seconds * fps))
    ctx = round(context_seconds * fps)
    model = model_view(model, depth=encoder_depth(model.config, ks))
    full = int(model.config.num_hidden_layers) + 1
    out = {k: np.empty((n, int(model.config.hidden_size)), np.float32) for k in ks}
    with torch.inference_mode():
        x = torch.from_numpy(w).to(device)
        feats = _conv_features_chunked(model.feature_extractor, x, chunk)  # (C, n)
        for j0 in range(0, n, chunk):
            j1 = min(n, j0 + chunk)
            a, b = max(0, j0 - ctx), min(n, j1 + ctx)
            view = model_view(model, feature_extractor=_PrecomputedFeatures(feats[None, :, a:b]))
            dummy = x.new_zeros((1, (b - a - 1) * HUBERT_HOP + HUBERT_WIN))  # only its length is used
            hidden = view(dummy, output_hidden_states=True, return_dict=True).hidden_states
            for k in ks:
                out[k][j0:j1] = hidden[k % full][0, j0 - a : j1 - a].float().cpu().numpy()
    return out


def extract_hubert_single(
    model: torch.nn.Module,
    waves: Sequence[np.ndarray],
    layers: Sequence[int],
    device: str | torch.device = "cpu",
    normalize: bool = False,
) -> list[dict[int, np.ndarray]]:
    """One clip per forward pass: the reference for batched extraction and the benchmark baseline."""
    ks = _check_layers(layers, int(model.config.num_hidden_layers))
    prepared = _prepare(waves, normalize)
    return [_run_batch(model, [w], ks, device, use_mask=False)[0] for w in prepared]
