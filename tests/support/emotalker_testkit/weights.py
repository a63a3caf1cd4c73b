"""Random weights that exercise a network: He-initialised layers and non-trivial BatchNorm."""

from __future__ import annotations

import torch


def spread_weights(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """He-initialised conv/linear weights with small random biases, and BatchNorm affine parameters and
    running statistics away from their defaults, so that every input (and eval-mode BN) moves the output;
    PyTorch's default initialisation leaves deep audio paths nearly constant. Returns the model in eval."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.Conv2d | torch.nn.ConvTranspose2d | torch.nn.Linear):
                torch.nn.init.kaiming_normal_(mod.weight, nonlinearity="relu")
                mod.bias.normal_(0, 0.1)
            elif isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                mod.weight.copy_(1 + 0.1 * torch.randn_like(mod.weight))
                mod.bias.normal_(0, 0.1)
                mod.running_mean.normal_(0, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
    return model.eval()
