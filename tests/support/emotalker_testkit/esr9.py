"""Random ESR-9 weights in the released 10-file layout, for tests that must not need the real ones."""

from __future__ import annotations

from pathlib import Path

import torch

from emotalker.models.esr9 import ESR9, esr9_files


def random_esr9_states(seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Base then branches 1..9, default-initialised convs, and BatchNorm affine parameters and running
    statistics far from the identity, so running vs batch statistics give visibly different outputs."""
    torch.manual_seed(seed)
    model = ESR9()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                c = module.num_features
                module.weight.copy_(0.5 + torch.rand(c, generator=g))
                module.bias.copy_(0.1 * torch.randn(c, generator=g))
                module.running_mean.copy_(0.2 * torch.randn(c, generator=g))
                module.running_var.copy_(0.5 + 1.5 * torch.rand(c, generator=g))
                module.num_batches_tracked.fill_(1000)
    parts = [model.base, *model.convolutional_branches]
    return [{k: v.clone() for k, v in p.state_dict().items()} for p in parts]


def write_random_esr9(folder: Path, seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """Write ``Net-Base-Shared_Representations.pt`` and ``Net-Branch_{1..9}.pt`` (plain state dicts, as
    released) into ``folder``; returns {file name: state dict}."""
    folder.mkdir(parents=True, exist_ok=True)
    states = dict(zip(esr9_files(), random_esr9_states(seed), strict=True))
    for name, state in states.items():
        torch.save(state, folder / name)
    return states
