"""Cross-modal Transformer: shapes, Eq. 8-9 loss, overfitting one batch, long autoregressive decoding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from emotalker.configs.schema import TransformerConfig
from emotalker.models.transformer import CrossModalTransformer

torch.set_num_threads(1)


def tiny(**kw: object) -> CrossModalTransformer:
    args = dict(d_model=32, n_layers=2, n_heads=4, ff_dim=64, dropout=0.0, audio_dim=24, code_dim=8,
                content_vocab=10, content_dim=6)  # fmt: skip
    args.update(kw)
    m = CrossModalTransformer.from_config(TransformerConfig(), **args)
    if m.use_content_tokens:
        m.set_content_centres(torch.randn(10, 6, generator=torch.Generator().manual_seed(3)))
    return m


def batch(b: int = 2, n: int = 6, apt: int = 8) -> dict[str, torch.Tensor]:
    """``apt`` HuBERT frames per token: 8 at the native 50 Hz with l = 4 (Eq. 7's k)."""
    torch.manual_seed(1)
    s = n * apt
    return {
        "audio": torch.randn(b, s, 24),
        "content": torch.randint(0, 10, (b, s)),
        "ref": torch.randn(b, 8),  # stage-1 encoding of the reference (code_dim)
    }


def test_forward_and_loss_terms() -> None:
    m = tiny()
    d = batch()
    codebook = torch.randn(16, 8)
    idx = torch.randint(0, 16, (2, 6))
    tgt = codebook[idx]
    pred = m(d["audio"], d["content"], tgt, d["ref"])
    assert pred.shape == (2, 6, 8)
    out = m.loss(pred, tgt, idx, codebook)
    assert torch.allclose(out["loss"], out["loss_l2"] + 0.8 * out["loss_contrastive"])
    # perfect predictions: L2 = 0 and the contrastive term is the softmax over -distances
    perfect = m.loss(tgt, tgt, idx, codebook)
    assert perfect["loss_l2"].item() == 0 and perfect["token_acc"].item() == 1.0
    m2 = tiny(use_contrastive=False)
    out2 = m2.loss(pred, tgt, idx, codebook)
    assert torch.allclose(out2["loss"], out2["loss_l2"])


def test_eq9_contrastive_is_cosine_over_every_code_and_scale_invariant() -> None:
    m = tiny(contrastive_temperature=0.2)
    codebook = torch.randn(16, 8)
    idx = torch.randint(0, 16, (2, 6))
    pred = torch.randn(2, 6, 8)
    out = m.loss(pred, codebook[idx], idx, codebook)
    scaled = m.loss(3.0 * pred, codebook[idx], idx, codebook)
    # sim() is the cosine similarity: scaling the prediction leaves the contrastive term unchanged
    assert torch.allclose(out["loss_contrastive"], scaled["loss_contrastive"], atol=1e-6)
    cos = F.cosine_similarity(pred.reshape(-1, 1, 8), codebook[None], dim=-1)  # (12, 16)
    expected = F.cross_entropy(cos / 0.2, idx.reshape(-1))
    assert torch.allclose(out["loss_contrastive"], expected, atol=1e-5)
    with pytest.raises(ValueError, match="temperature"):
        tiny(contrastive_temperature=0.0)


def test_content_branch_attends_to_the_kmeans_cluster_centres() -> None:
    m = tiny().eval()
    assert not any(isinstance(mod, torch.nn.Embedding) for mod in m.modules())  # no learned token table
    assert m.content_proj is not None and m.content_proj.in_features == 6
    assert "content_centres" in m.state_dict()  # saved with the weights
    d = batch()
    d["content"][:] = 2  # every frame is token 2
    tgt = torch.randn(2, 6, 8)
    p1 = m(d["audio"], d["content"], tgt, d["ref"])
    centres = m.content_centres.clone()
    centres[5] += 10.0  # an unused centre: nothing changes
    m.set_content_centres(centres)
    assert torch.allclose(p1, m(d["audio"], d["content"], tgt, d["ref"]), atol=1e-6)
    centres[2] += 1.0  # the centre the tokens index
    m.set_content_centres(centres)
    assert not torch.allclose(p1, m(d["audio"], d["content"], tgt, d["ref"]), atol=1e-4)
    with pytest.raises(ValueError, match="centres"):
        m.set_content_centres(torch.zeros(10, 7))


def test_causality_future_targets_do_not_change_past_predictions() -> None:
    m = tiny().eval()
    d = batch()
    tgt = torch.randn(2, 6, 8)
    p1 = m(d["audio"], d["content"], tgt, d["ref"])
    tgt2 = tgt.clone()
    tgt2[:, 4:] += 5.0  # inputs at positions 5.. change
    p2 = m(d["audio"], d["content"], tgt2, d["ref"])
    assert torch.allclose(p1[:, :5], p2[:, :5], atol=1e-5)
    assert not torch.allclose(p1[:, 5], p2[:, 5])


def test_audio_alignment_is_local() -> None:
    m = tiny().eval()
    d = batch()
    tgt = torch.randn(2, 6, 8)
    p1 = m(d["audio"], d["content"], tgt, d["ref"])
    audio2 = d["audio"].clone()
    audio2[:, 40:] += 3.0  # frames of the last token only (k = 48 // 6 = 8: token 5 sees [32, 48))
    content2 = d["content"].clone()
    p2 = m(audio2, content2, tgt, d["ref"])
    assert torch.allclose(p1[:, :5], p2[:, :5], atol=1e-5)  # token 4 sees [24, 40)
    assert not torch.allclose(p1[:, 5], p2[:, 5])


def test_overfits_one_batch() -> None:
    torch.manual_seed(0)
    m = tiny()
    d = batch(b=4)
    codebook = torch.randn(16, 8)
    idx = torch.randint(0, 16, (4, 6))
    tgt = codebook[idx]
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        out = m.loss(m(d["audio"], d["content"], tgt, d["ref"]), tgt, idx, codebook)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        first = first if first is not None else out["loss_l2"].item()
    m.eval()
    final = m.loss(m(d["audio"], d["content"], tgt, d["ref"]), tgt, idx, codebook)
    # L2 falls; Eq. 9's plain cosine (logits in [-1, 1]) keeps the contrastive term near its floor
    # log(1 + 15 e^-2) ~ 0.98 for 16 codes, so the total cannot fall as far
    assert final["loss_l2"].item() < first / 5
    assert final["token_acc"].item() > 0.9
    # greedy decoding with the codebook reproduces the teacher-forced tokens
    _, gen_idx = m.generate(d["audio"], d["content"], 6, start=d["ref"], codebook=codebook)
    assert gen_idx is not None and (gen_idx == idx).float().mean().item() > 0.9


def test_generate_long_and_sliding_context_matches_full() -> None:
    m = tiny().eval()
    n = 260  # 1040 frames
    d = batch(b=1, n=n)
    codebook = torch.randn(16, 8)
    pred, idx = m.generate(d["audio"], d["content"], n, start=d["ref"], codebook=codebook, max_context=24)
    assert pred.shape == (1, n, 8) and idx is not None and idx.shape == (1, n)
    assert bool(torch.isfinite(pred).all())
    # with a context longer than the sequence the windowed path equals full-context decoding
    short = batch(b=1, n=10)
    a, _ = m.generate(short["audio"], short["content"], 10, start=short["ref"], max_context=None)
    b, _ = m.generate(short["audio"], short["content"], 10, start=short["ref"], max_context=50)
    assert torch.allclose(a, b, atol=1e-5)


def test_variants_and_ablations() -> None:
    d = batch()
    tgt = torch.randn(2, 6, 8)
    m2 = tiny(use_biased_mask=False, use_alignment_mask=False, style_from_reference=False)
    assert m2(d["audio"], d["content"], tgt).shape == (2, 6, 8)
    m3 = tiny(use_content_tokens=False)
    assert m3(d["audio"], None, tgt, d["ref"]).shape == (2, 6, 8)
    with pytest.raises(ValueError, match="no content branch"):
        m3.set_content_centres(torch.zeros(10, 6))


def test_from_config_and_bad_input() -> None:
    with pytest.raises(TypeError, match="code_dim"):  # stage-1 facts have no silent default
        CrossModalTransformer.from_config(TransformerConfig(), content_vocab=7, content_dim=5)
    m = CrossModalTransformer.from_config(
        TransformerConfig(n_layers=1, d_model=16, ff_dim=32), content_vocab=7, code_dim=8, content_dim=5
    )
    assert m.content_vocab == 7 and m.content_centres.shape == (7, 5)
    assert m.contrastive_temperature == TransformerConfig().contrastive_temperature
    d = batch()
    t = tiny()
    with pytest.raises(ValueError, match="audio"):
        t(torch.randn(2, 48, 5), d["content"], torch.randn(2, 6, 8), d["ref"])
    with pytest.raises(ValueError, match="content"):
        t(d["audio"], torch.randint(0, 99, (2, 48)), torch.randn(2, 6, 8), d["ref"])
    with pytest.raises(ValueError, match="reference"):
        t(d["audio"], d["content"], torch.randn(2, 6, 8), None)
    with pytest.raises(ValueError, match="stage-1 encoding"):
        t(d["audio"], d["content"], torch.randn(2, 6, 8), torch.randn(2, 57))
    with pytest.raises(ValueError, match="Eq. 7"):
        t(d["audio"][:, :4], d["content"][:, :4], torch.randn(2, 6, 8), d["ref"])


def test_ablation_switch_without_biased_mask_keeps_causality_and_changes_attention() -> None:
    """Table 4 "w/o bias mask": same weights, only the ALiBi bias leaves self-attention (still causal)."""
    m = tiny().eval()
    plain = tiny(use_biased_mask=False).eval()
    plain.load_state_dict(m.state_dict())
    d, tgt = batch(), torch.randn(2, 6, 8)
    p_biased, p_plain = (
        m(d["audio"], d["content"], tgt, d["ref"]),
        plain(d["audio"], d["content"], tgt, d["ref"]),
    )
    assert torch.allclose(p_biased[:, 0], p_plain[:, 0], atol=1e-6)  # the first token attends to itself only
    assert not torch.allclose(p_biased[:, 1:], p_plain[:, 1:])
    tgt2 = tgt.clone()
    tgt2[:, 4:] += 5.0
    assert torch.allclose(p_plain[:, :5], plain(d["audio"], d["content"], tgt2, d["ref"])[:, :5], atol=1e-5)


def test_ablation_switch_without_alignment_mask_lets_every_token_hear_all_audio() -> None:
    """Table 4 "w/o alignment mask": the first token's prediction now depends on the last frames."""
    d, tgt = batch(), torch.randn(2, 6, 8)
    audio2 = d["audio"].clone()
    audio2[:, 40:] += 3.0  # frames only the last token sees under the mask (token 5: [32, 48))
    for aligned in (True, False):
        m = tiny(use_alignment_mask=aligned).eval()
        p1, p2 = m(d["audio"], d["content"], tgt, d["ref"]), m(audio2, d["content"], tgt, d["ref"])
        assert torch.allclose(p1[:, 0], p2[:, 0], atol=1e-5) == aligned


def test_eq9_default_is_the_plain_cosine_similarity() -> None:
    # "sim(.) computes the cosine similarity": no temperature unless contrastive_temperature is set
    m = tiny()
    assert m.contrastive_temperature == 1.0
    codebook = torch.randn(16, 8)
    idx = torch.randint(0, 16, (2, 6))
    pred = torch.randn(2, 6, 8)
    cos = F.cosine_similarity(pred.reshape(-1, 1, 8), codebook[None], dim=-1)
    expected = F.cross_entropy(cos, idx.reshape(-1))
    assert torch.allclose(m.loss(pred, codebook[idx], idx, codebook)["loss_contrastive"], expected, atol=1e-5)


def decoder_inputs(m: CrossModalTransformer, ref: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    seen: list[torch.Tensor] = []
    original = m._decode
    m._decode = lambda inputs, *a: (seen.append(inputs), original(inputs, *a))[1]  # type: ignore[method-assign]
    d = batch()
    m(d["audio"], d["content"], tgt, ref)
    return seen[0]


def test_reference_is_the_start_token_only_by_default() -> None:
    # Sec. 3.3: the reference's encoding is the start token; later inputs are the previous tokens alone
    torch.manual_seed(0)
    tgt = torch.randn(2, 6, 8)
    ref = torch.randn(2, 8)
    m = tiny().eval()
    inputs = decoder_inputs(m, ref, tgt)
    assert torch.allclose(inputs[:, 0], m.style_proj(ref))
    assert torch.allclose(inputs[:, 1:], m.token_proj(tgt[:, :-1]))
    old = tiny(style_every_input=True).eval()  # the named switch: the style on every input (issue 26)
    inputs = decoder_inputs(old, ref, tgt)
    assert torch.allclose(inputs[:, 1:], old.token_proj(tgt[:, :-1]) + old.style_proj(ref)[:, None])


def test_sliding_decoding_keeps_the_start_token_at_the_window_head() -> None:
    m = tiny().eval()
    d = batch(b=1, n=12)
    a, _ = m.generate(d["audio"], d["content"], 12, start=d["ref"], max_context=4)
    b, _ = m.generate(d["audio"], d["content"], 12, start=d["ref"] + 1.0, max_context=4)
    assert not torch.allclose(a[:, -1], b[:, -1], atol=1e-4)  # the reference still matters 8 tokens later


def test_eq7_window_looks_ahead_in_the_model() -> None:
    d = batch()
    tgt = torch.randn(2, 6, 8)
    audio2 = d["audio"].clone()
    audio2[:, 41:] += 3.0  # token 4 (0-based): authors' [24, 40) does not see them, Eq. 7's [32, 49) does
    for window, changes in (("authors", False), ("eq7", True)):
        m = tiny(alignment_window=window).eval()
        p1 = m(d["audio"], d["content"], tgt, d["ref"])
        p2 = m(audio2, d["content"], tgt, d["ref"])
        assert torch.allclose(p1[:, :4], p2[:, :4], atol=1e-5), window  # tokens 0-3 end by frame 40
        assert (not torch.allclose(p1[:, 4], p2[:, 4], atol=1e-5)) == changes, window
        full, _ = m.generate(d["audio"], d["content"], 6, start=d["ref"], max_context=None)
        part, _ = m.generate(d["audio"], d["content"], 6, start=d["ref"], max_context=50)
        assert torch.allclose(full, part, atol=1e-5), window
    with pytest.raises(ValueError, match="alignment window"):
        tiny(alignment_window="future")
