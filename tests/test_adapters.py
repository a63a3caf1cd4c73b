"""The third-party internals the adapters rely on are still there in the pinned versions (else: loud)."""

from __future__ import annotations

import pytest
import torch

from emotalker.tasks.adapters import face_alignment as fa_adapter
from emotalker.tasks.adapters import transformers_hubert as hf_adapter


def test_face_alignment_still_builds_its_fan_through_load_native() -> None:
    fa_adapter.check_internals()


def test_face_alignment_check_names_the_adapter_when_the_internals_change(monkeypatch) -> None:
    import face_alignment

    monkeypatch.delattr(face_alignment.FaceAlignment, "_load_native")
    with pytest.raises(RuntimeError, match=r"no longer builds its FAN.*adapters\.face_alignment"):
        fa_adapter.local_face_alignment("unused.pth")


def _tiny_hubert() -> torch.nn.Module:
    from transformers import HubertConfig, HubertModel

    torch.manual_seed(0)
    cfg = HubertConfig(
        hidden_size=16,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=32,
        conv_dim=(8, 8),
        conv_kernel=(10, 3),
        conv_stride=(5, 2),
        num_conv_pos_embeddings=4,
        num_conv_pos_embedding_groups=2,
    )
    return HubertModel(cfg).eval()


def _hooks(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_transformers_hubert_view_shares_weights_and_hooks_once() -> None:
    hf_adapter.check_internals()
    model = _tiny_hubert()
    wave = torch.randn(1, 1600)
    with torch.inference_mode():
        full = model(wave, output_hidden_states=True).hidden_states
        view = hf_adapter.model_view(model, depth=2)
        hooks = _hooks(model)
        cut = view(wave, output_hidden_states=True).hidden_states
        assert hooks > 0 and getattr(model, hf_adapter.HOOKS_FLAG)
        again = hf_adapter.model_view(model, depth=2)(wave, output_hidden_states=True).hidden_states
    assert len(model.encoder.layers) == 4 and len(view.encoder.layers) == 2  # the original is untouched
    assert len(cut) == 3 and _hooks(model) == hooks  # a second view adds no hooks to the shared layers
    for k in range(3):
        torch.testing.assert_close(cut[k], full[k])
        torch.testing.assert_close(again[k], full[k])
    assert view.encoder.layers[0] is model.encoder.layers[0]


def test_cpbd_still_defines_compute_and_imports_on_this_scipy() -> None:
    from emotalker.tasks.adapters import cpbd as cpbd_adapter

    cpbd_adapter.check_internals()
