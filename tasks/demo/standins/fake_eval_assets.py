"""Random-initialised evaluation models in their real file formats, for tests and the demo.

``syncnet_v2.model`` is a plain SyncNet state dict; ESR-9 is its 10 released state dicts (random
weights); the alternative expression classifier is a tiny Hugging Face ViT saved with ``save_pretrained``
(safetensors + preprocessor config + ``id2label``).
"""

from __future__ import annotations

from pathlib import Path

import torch

FER7_LABELS = ["Anger", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise"]


def write_fake_syncnet(path: str | Path, seed: int = 0) -> Path:
    """A random SyncNet with non-trivial batch-norm statistics, saved as the released weights are."""
    from emotalker.models.syncnet import SyncNet

    torch.manual_seed(seed)
    model = SyncNet()
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    Path(f"{path}.standin").write_text("random SyncNet written by the demo-data flow\n")
    return path


def write_fake_expression_classifier(
    path: str | Path, labels: list[str] | None = None, favour: str | None = None, seed: int = 0
) -> Path:
    """A tiny ViT image classifier; ``favour`` biases it to always answer that label."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    labels = list(labels or FER7_LABELS)
    torch.manual_seed(seed)
    cfg = ViTConfig(
        image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, num_labels=len(labels),
        id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)},
    )  # fmt: skip
    model = ViTForImageClassification(cfg)
    if favour is not None:
        with torch.no_grad():
            model.classifier.weight.mul_(0.01)
            model.classifier.bias.zero_()
            model.classifier.bias[labels.index(favour)] = 5.0
    path = Path(path)
    model.save_pretrained(path)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)
    return path


def write_fake_esr9(folder: str | Path, seed: int = 0) -> Path:
    """Random ESR-9 in the released layout (``Net-Base-Shared_Representations.pt``,
    ``Net-Branch_{1..9}.pt``, plain state dicts), BatchNorm statistics away from the identity."""
    from emotalker.models.esr9 import ESR9, esr9_files

    torch.manual_seed(seed)
    model = ESR9()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, part in zip(esr9_files(), [model.base, *model.convolutional_branches], strict=True):
        torch.save(part.state_dict(), folder / name)
    (folder / ".standin").write_text("random ESR-9 written by the demo-data flow\n")
    return folder
