"""Figures logged with each training run: loss curves, codebook usage, t-SNE of codes (Fig. 4a)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from emotalker.configs.constants import EMOTIONS  # noqa: E402


def loss_curves(history: dict[str, list[tuple[int, float]]], path: Path) -> Path:
    keys = [k for k in history if "loss" in k or k.endswith("_mse")]
    fig, ax = plt.subplots(figsize=(7, 4))
    for k in sorted(keys):
        steps, values = zip(*history[k], strict=True)
        ax.plot(steps, values, label=k)
    ax.set_xlabel("step")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax.set_title("losses")
    return _save(fig, path)


def codebook_usage(counts: np.ndarray, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.bar(np.arange(len(counts)), counts, width=1.0)
    used = int((counts > 0).sum())
    ax.set_title(f"codebook usage: {used}/{len(counts)} codes used")
    ax.set_xlabel("code index")
    ax.set_ylabel("count")
    return _save(fig, path)


def code_tsne(codebook: np.ndarray, code_emotion: np.ndarray, path: Path, seed: int = 0) -> Path:
    """t-SNE of the used codebook entries coloured by the emotion that uses each code most (Fig. 4a)."""
    from sklearn.manifold import TSNE

    used = np.where(code_emotion >= 0)[0]
    fig, ax = plt.subplots(figsize=(5, 5))
    if len(used) >= 5:
        emb = TSNE(
            n_components=2, perplexity=min(30, len(used) - 1), random_state=seed, init="pca"
        ).fit_transform(codebook[used])
        for e, name in enumerate(EMOTIONS):
            sel = code_emotion[used] == e
            if sel.any():
                ax.scatter(emb[sel, 0], emb[sel, 1], s=12, label=name)
        ax.legend(fontsize=7)
    ax.set_title("t-SNE of codebook entries by dominant emotion")
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
