"""transformers (pinned 5.24.0): views of a loaded HuBERT that share its weights.

The feature stage runs HuBERT only as deep as the deepest requested layer, or with a conv encoder that
returns frames computed clip by clip. transformers has no API for either, so a view is a shallow copy
of the model whose child-module table (torch's ``_modules``) is copied before one child is swapped.
Recent transformers record ``hidden_states`` with hooks installed lazily on a model's first forward
(``transformers.utils.output_capturing``); they are installed on the original first, so views inherit
the "installed" flag instead of stacking another set of hooks on the shared layers.
"""

from __future__ import annotations

import copy
import importlib

import torch

HOOKS_MODULE = "transformers.utils.output_capturing"
HOOKS_FLAG = "_output_capturing_hooks_installed"


def check_internals() -> None:
    """Raise naming this module when transformers' hidden-state hook installer is not where it was."""
    import transformers

    module = importlib.import_module(HOOKS_MODULE)
    if not callable(getattr(module, "maybe_install_capturing_hooks", None)):
        raise RuntimeError(
            f"transformers {transformers.__version__}: {HOOKS_MODULE}.maybe_install_capturing_hooks is gone; "
            f"update {__name__} for this version"
        )


def install_output_hooks(model: torch.nn.Module) -> None:
    """Install transformers' hidden-state recording hooks on ``model`` itself, once."""
    check_internals()
    importlib.import_module(HOOKS_MODULE).maybe_install_capturing_hooks(model)
    if not getattr(model, HOOKS_FLAG, False):
        raise RuntimeError(f"transformers no longer flags hooked models with {HOOKS_FLAG}; update {__name__}")


def model_view(
    model: torch.nn.Module, depth: int | None = None, feature_extractor: torch.nn.Module | None = None
) -> torch.nn.Module:
    """A view of ``model`` sharing all weights: only the first ``depth`` transformer layers, and/or another
    conv feature encoder. The original model is not modified (other threads may be using it).
    """
    layers = list(model.encoder.layers)
    cut = depth is not None and depth < len(layers)
    if not cut and feature_extractor is None:
        return model
    install_output_hooks(model)  # the copies below then inherit "installed" instead of stacking hooks
    view = copy.copy(model)
    view._modules = dict(view._modules)  # the shallow copy would share (and so edit) this dict
    if cut:
        encoder = copy.copy(model.encoder)
        encoder._modules = dict(encoder._modules)
        encoder.layers = torch.nn.ModuleList(layers[:depth])
        view.encoder = encoder
    if feature_extractor is not None:
        view.feature_extractor = feature_extractor
    return view
