"""Stage 2 (Sec. 3.3): cross-modal autoregressive Transformer decoder over codebook embeddings.

Each decoder layer: biased causal self-attention (Eq. 4-5) -> cross-attention to the content tokens'
k-means cluster centres ("the cluster center embedding as the discrete code feature", projected from the
HuBERT width) -> cross-attention to emotion-aware HuBERT features under the alignment mask (Eq. 6-7) ->
feed-forward. The start token is the stage-1 encoder's encoding of the reference face coefficients
(``reference``, (B, code_dim)); as in the paper it is the first input only (``style_every_input``: its
projection is also added to every later input, the behaviour before issue 26); sliding-window decoding
puts it at the head of every window. The model predicts codebook-space embeddings ê_i and is trained with
L2 + a cosine-similarity contrastive term over all K codes (Eq. 8-9).

Audio stays at HuBERT's native rate (~50 Hz): Eq. 7's k = floor(T'_a / T'_v) is taken from the
lengths of each call (8 for 50 Hz audio and l = 4 frames per token).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from emotalker.models.masks import alibi_biased_mask, alignment_bounds, alignment_mask, causal_mask, eq7_k
from emotalker.models.quantizer import code_distances


def sinusoid(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal encoding of (any) integer positions (N,) -> (N, dim), computed on demand."""
    half = (dim + 1) // 2
    freq = torch.exp(-math.log(10000.0) * torch.arange(half, device=positions.device) / half)
    ang = positions.float()[:, None] * freq[None]
    return torch.cat([ang.sin(), ang.cos()], dim=1)[:, :dim]


class Attention(nn.Module):
    """Multi-head attention with an additive float mask broadcastable to (B, H, Tq, Tk)."""

    def __init__(self, d_model: int, n_heads: int, dropout: float, kv_dim: int | None = None) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} must be divisible by n_heads {n_heads}")
        kv_dim = kv_dim or d_model
        self.n_heads = n_heads
        self.q = nn.Linear(d_model, d_model)
        self.k = nn.Linear(kv_dim, d_model)
        self.v = nn.Linear(kv_dim, d_model)
        self.out = nn.Linear(d_model, d_model)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, kv: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, tq, d = x.shape
        h = self.n_heads

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, t.shape[1], h, d // h).transpose(1, 2)

        if mask is not None:
            mask = mask.to(x.dtype)
        y = F.scaled_dot_product_attention(
            heads(self.q(x)),
            heads(self.k(kv)),
            heads(self.v(kv)),
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.out(y.transpose(1, 2).reshape(b, tq, d))


class DecoderLayer(nn.Module):
    """Pre-norm decoder layer: self-attn -> content cross-attn (optional) -> audio cross-attn -> FFN."""

    def __init__(self, d_model: int, n_heads: int, ff_dim: int, dropout: float, use_content: bool) -> None:
        super().__init__()
        self.self_attn = Attention(d_model, n_heads, dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.content_attn = Attention(d_model, n_heads, dropout) if use_content else None
        self.norm_c = nn.LayerNorm(d_model) if use_content else None
        self.audio_attn = Attention(d_model, n_heads, dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(
            nn.Linear(d_model, ff_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff_dim, d_model)
        )
        self.norm3 = nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        self_mask: torch.Tensor,
        audio: torch.Tensor,
        audio_mask: torch.Tensor | None,
        content: torch.Tensor | None,
        content_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.drop(self.self_attn(h, h, self_mask))
        if self.content_attn is not None and content is not None:
            assert self.norm_c is not None
            x = x + self.drop(self.content_attn(self.norm_c(x), content, content_mask))
        x = x + self.drop(self.audio_attn(self.norm2(x), audio, audio_mask))
        return x + self.drop(self.ff(self.norm3(x)))


class CrossModalTransformer(nn.Module):
    """Autoregressive predictor of codebook embeddings from emotion-aware audio + content tokens.

    Hyper-parameters have one home, ``configs/schema.py:TransformerConfig``; code_dim (stage 1) and the
    content vocabulary (k-means K, centre width) come from :meth:`from_config`'s overrides.
    """

    def __init__(
        self,
        *,
        d_model: int,
        n_layers: int,
        n_heads: int,
        ff_dim: int,
        dropout: float,
        audio_dim: int,
        code_dim: int,
        alibi_window: int,
        use_content_tokens: bool,
        content_vocab: int,
        content_dim: int,
        use_alignment_mask: bool,
        alignment_window: str,
        use_biased_mask: bool,
        style_from_reference: bool,
        style_every_input: bool,
        contrastive_weight: float,
        contrastive_temperature: float,
        use_contrastive: bool,
    ) -> None:
        super().__init__()
        if contrastive_temperature <= 0:
            raise ValueError(f"contrastive_temperature must be > 0, got {contrastive_temperature}")
        self.d_model = d_model
        self.n_heads = n_heads
        self.code_dim = code_dim
        self.audio_dim = audio_dim
        self.alibi_window = alibi_window
        self.use_content_tokens = use_content_tokens
        self.use_alignment_mask = use_alignment_mask
        alignment_bounds(0, 1, alignment_window)  # fails fast on an unknown window
        self.alignment_window = alignment_window
        self.style_every_input = style_every_input
        self.use_biased_mask = use_biased_mask
        self.style_from_reference = style_from_reference
        self.contrastive_weight = contrastive_weight
        self.contrastive_temperature = contrastive_temperature
        self.use_contrastive = use_contrastive

        self.audio_proj = nn.Linear(audio_dim, d_model)
        self.content_vocab = content_vocab
        self.content_dim = content_dim
        self.content_proj: nn.Module | None = None
        if use_content_tokens:
            # k-means centres of the content tokens (K, HuBERT width): fixed, saved with the weights
            self.register_buffer("content_centres", torch.zeros(content_vocab, content_dim))
            self.content_proj = nn.Linear(content_dim, d_model)
        self.token_proj = nn.Linear(code_dim, d_model)
        if style_from_reference:
            self.style_proj: nn.Module = nn.Linear(code_dim, d_model)  # over the stage-1 encoding
        else:
            self.style_proj = nn.Identity()
            self.style_token = nn.Parameter(torch.zeros(d_model))
        self.layers = nn.ModuleList(
            [DecoderLayer(d_model, n_heads, ff_dim, dropout, use_content_tokens) for _ in range(n_layers)]
        )
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, code_dim)

    @torch.no_grad()
    def set_content_centres(self, centres: torch.Tensor) -> None:
        """Install the k-means cluster centres (content_vocab, content_dim) the content tokens index."""
        if not self.use_content_tokens:
            raise ValueError("use_content_tokens=False: the model has no content branch")
        want = (self.content_vocab, self.content_dim)
        if tuple(centres.shape) != want:
            raise ValueError(
                f"content centres must be {want} (k-means K x HuBERT width), got {tuple(centres.shape)}"
            )
        self.content_centres.copy_(centres.to(self.content_centres))

    @classmethod
    def from_config(cls, cfg: Any, **overrides: Any) -> CrossModalTransformer:
        """Build from a ``TransformerConfig`` (``content_vocab=cfg.audio.kmeans_k``, ``content_dim``)."""
        kwargs = cfg.model_dump() if hasattr(cfg, "model_dump") else dict(cfg)
        kwargs.update(overrides)
        return cls(**kwargs)

    # ---- embeddings ----------------------------------------------------------------------------------
    def style(self, reference: torch.Tensor | None, batch: int) -> torch.Tensor:
        """Start/style embedding (B, d_model) from the stage-1 encoding of the reference (B, code_dim), or
        one per token (B, N, d_model) from per-token encodings (B, N, code_dim): emotional driving frames."""
        if self.style_from_reference:
            if reference is None:
                raise ValueError("style_from_reference=True needs a reference encoding (B, code_dim)")
            if (
                reference.ndim not in (2, 3)
                or reference.shape[0] != batch
                or reference.shape[-1] != self.code_dim
            ):
                raise ValueError(
                    f"reference must be the stage-1 encoding ({batch}, {self.code_dim}) or one per token "
                    f"({batch}, N, {self.code_dim}), "
                    f"got {tuple(reference.shape)}"
                )
            s = self.style_proj(reference)
        else:
            s = self.style_token[None].expand(batch, -1)
        return s

    def _memory(
        self, audio: torch.Tensor, content: torch.Tensor | None, audio_offset: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if audio.ndim != 3 or audio.shape[-1] != self.audio_dim:
            raise ValueError(f"audio features must be (B, S, {self.audio_dim}), got {tuple(audio.shape)}")
        # Absolute positions only for the no-alignment-mask ablation: with the mask, alignment is given and
        # leaving memory position-free keeps the model translation invariant for arbitrarily long audio.
        pe = torch.zeros((), dtype=audio.dtype, device=audio.device)
        if not self.use_alignment_mask:
            pos = torch.arange(audio.shape[1], device=audio.device) + audio_offset
            pe = sinusoid(pos, self.d_model).to(audio.dtype)[None]
        a = self.audio_proj(audio) + pe
        c = None
        if self.content_proj is not None:
            if content is None:
                raise ValueError("use_content_tokens=True needs content tokens (B, S)")
            if content.shape != audio.shape[:2]:
                raise ValueError(
                    f"content tokens {tuple(content.shape)} and audio {tuple(audio.shape)} must share (B, S)"
                )
            if content.dtype not in (torch.int16, torch.int32, torch.int64):
                raise ValueError(f"content must be integer k-means token ids (B, S), got {content.dtype}")
            if int(content.min()) < 0 or int(content.max()) >= self.content_vocab:
                raise ValueError(f"content tokens must lie in [0, {self.content_vocab})")
            centres = F.embedding(content.long(), self.content_centres).to(audio.dtype)
            c = self.content_proj(centres) + pe  # cluster-centre embedding as the discrete code feature
        return a, c

    def _masks(
        self, n_tok: int, n_audio: int, k: int, token_offset: int, audio_offset: int, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.use_biased_mask:
            self_mask = alibi_biased_mask(self.n_heads, n_tok, self.alibi_window, device=device)
        else:
            self_mask = causal_mask(n_tok, device=device)
        cross = None
        if self.use_alignment_mask:
            cross = alignment_mask(
                n_tok,
                n_audio,
                k,
                token_offset=token_offset,
                audio_offset=audio_offset,
                window=self.alignment_window,
                device=device,
            )[None]
        return self_mask[None], (cross[None] if cross is not None else None)

    def _decode(
        self,
        inputs: torch.Tensor,
        audio: torch.Tensor,
        content: torch.Tensor | None,
        k: int,
        token_offset: int,
        audio_offset: int,
    ) -> torch.Tensor:
        """Decoder stack: embedded inputs (B, n, d_model) -> predicted embeddings (B, n, code_dim)."""
        pos = torch.arange(inputs.shape[1], device=inputs.device) + token_offset
        # periodic positional encoding (FaceFormer PPE, period = alibi window)
        x = inputs + sinusoid(pos % self.alibi_window, self.d_model).to(inputs.dtype)[None]
        self_mask, cross = self._masks(
            inputs.shape[1], audio.shape[1], k, token_offset, audio_offset, x.device
        )
        for layer in self.layers:
            x = layer(x, self_mask, audio, cross, content, cross)
        return self.head(self.norm(x))

    # ---- training -----------------------------------------------------------------------------------
    def forward(
        self,
        audio_feats: torch.Tensor,
        content: torch.Tensor | None,
        targets_q: torch.Tensor,
        reference: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Teacher forcing: inputs [start, e_1..e_{N-1}] -> predictions ê_1..ê_N (B, N, code_dim).

        ``audio_feats`` (B, T'_a, audio_dim) at HuBERT's rate and ``content`` (B, T'_a) tokens cover the
        N tokens' frames; ``reference`` (B, code_dim) is the stage-1 encoding of the reference face.
        """
        if targets_q.ndim != 3 or targets_q.shape[-1] != self.code_dim:
            raise ValueError(f"targets must be (B, N, {self.code_dim}), got {tuple(targets_q.shape)}")
        b, n, _ = targets_q.shape
        s = self.style(reference, b)
        prev = self.token_proj(targets_q[:, :-1])
        if self.style_every_input:  # not in the paper: the start token alone carries the reference
            prev = prev + s[:, None]
        inputs = torch.cat([s[:, None], prev], dim=1)
        a, c = self._memory(audio_feats, content)
        return self._decode(inputs, a, c, eq7_k(a.shape[1], n), 0, 0)

    def loss(
        self,
        pred: torch.Tensor,
        targets_q: torch.Tensor,
        target_idx: torch.Tensor,
        codebook: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Eq. 8-9: L2 to the quantized targets + contrastive weight * InfoNCE over all K codes.

        Eq. 9 logits are the cosine similarities ``sim(ê_i, c_k) / temperature`` against every code c_k;
        the positive is the ground-truth index, every other code a negative. ``mask`` (B, N) marks valid
        tokens.
        """
        if pred.shape != targets_q.shape or target_idx.shape != pred.shape[:2]:
            raise ValueError(
                f"pred {tuple(pred.shape)}, targets {tuple(targets_q.shape)}, "
                f"indices {tuple(target_idx.shape)} disagree"
            )
        m = torch.ones(pred.shape[:2], device=pred.device) if mask is None else mask.float()
        denom = m.sum().clamp(min=1.0)
        l2 = (((pred - targets_q.detach()) ** 2).mean(-1) * m).sum() / denom
        cb = codebook.detach().to(pred.dtype)
        flat = pred.reshape(-1, pred.shape[-1])
        logits = F.normalize(flat, dim=1) @ F.normalize(cb, dim=1).t() / self.contrastive_temperature  # Eq. 9
        ce = F.cross_entropy(logits, target_idx.reshape(-1).long(), reduction="none")
        contrastive = (ce * m.reshape(-1)).sum() / denom
        acc = ((logits.argmax(1) == target_idx.reshape(-1)).float() * m.reshape(-1)).sum() / denom
        total = l2 + (self.contrastive_weight * contrastive if self.use_contrastive else 0.0)
        return {"loss": total, "loss_l2": l2, "loss_contrastive": contrastive, "token_acc": acc}

    # ---- inference ----------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        audio_feats: torch.Tensor,
        content_feats: torch.Tensor | None,
        n_tokens: int,
        *,
        start: torch.Tensor | None = None,
        codebook: torch.Tensor | None = None,
        max_context: int | None = None,
        on_token: Callable[[int, int], None] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Greedy autoregressive decoding of ``n_tokens`` embeddings.

        ``start`` is the stage-1 encoding of the reference (B, code_dim) that forms the start token, or one
        encoding per token (B, n_tokens, code_dim) (driving frames: the start token, and a sliding window's
        head, carry the style of their token's own frames; every input i does with ``style_every_input``).
        With ``codebook`` (K, D) each prediction is snapped to its nearest code before being fed back (what
        teacher forcing trained on) and the indices are returned too. ``max_context`` limits the decoder to
        the last that many inputs (and their audio window): time and memory linear in length.
        ``on_token(done, n_tokens)`` is called after each token (long audio: a progress bar).
        """
        if n_tokens < 1:
            raise ValueError(f"n_tokens must be >= 1, got {n_tokens}")
        if max_context is not None and max_context < 1:
            raise ValueError(f"max_context must be >= 1, got {max_context}")
        b = audio_feats.shape[0]
        s = self.style(start, b)
        if s.ndim == 3 and s.shape[1] != n_tokens:
            raise ValueError(f"per-token references must number n_tokens={n_tokens}, got {s.shape[1]}")

        def style_of(i: int) -> torch.Tensor:  # the style carried by input i (which predicts token i)
            return s if s.ndim == 2 else s[:, i]

        a_full, c_full = self._memory(audio_feats, content_feats)
        n_audio = a_full.shape[1]
        k = eq7_k(n_audio, n_tokens)
        inputs = [style_of(0)[:, None]]
        preds: list[torch.Tensor] = []
        indices: list[torch.Tensor] = []
        for i in range(n_tokens):
            t0 = 0 if max_context is None else max(0, i + 1 - max_context)
            window = torch.cat(inputs[t0 : i + 1], dim=1)
            if t0 > 0 and not self.style_every_input:  # the start token heads every sliding window
                window = torch.cat([style_of(t0)[:, None], window[:, 1:]], dim=1)
            a0, a1 = 0, n_audio
            if max_context is not None and self.use_alignment_mask:
                a0 = min(max(0, alignment_bounds(t0, k, self.alignment_window)[0]), n_audio - 1)
                a1 = max(a0 + 1, min(n_audio, alignment_bounds(i, k, self.alignment_window)[1]))
            a = a_full[:, a0:a1]
            c = c_full[:, a0:a1] if c_full is not None else None
            out = self._decode(window, a, c, k, t0, a0)[:, -1]  # ê_{i+1}
            if codebook is not None:
                idx = code_distances(out, codebook).argmin(1)
                out = codebook.to(out.dtype)[idx]
                indices.append(idx)
            preds.append(out)
            if on_token is not None:
                on_token(i + 1, n_tokens)
            if i + 1 < n_tokens:
                nxt = self.token_proj(out)
                inputs.append((nxt + style_of(i + 1) if self.style_every_input else nxt)[:, None])
        pred = torch.stack(preds, dim=1)
        return pred, (torch.stack(indices, dim=1) if indices else None)
