"""ESR-9 (Siqueira, Magg & Wermter, AAAI 2020), the facial-expression ensemble the paper's EmoAcc uses [32].

A shared ``Base`` (4 convolutions with BatchNorm, two max-pools) feeds 9 ``ConvolutionalBranch`` modules,
each ending in ``fc`` (512 -> 8 AffectNet classes, contempt included) and ``fc_dimensional`` (8 -> 2,
valence/arousal). Module and parameter names and shapes are upstream's (``model/ml/esr_9.py`` of
siqueira-hc/Efficient-Facial-Feature-Learning-with-Wide-Ensemble-based-Convolutional-Neural-Networks), so
the released ``Net-Base-Shared_Representations.pt`` and ``Net-Branch_{1..9}.pt`` state dicts load strictly.

Upstream keeps the branches in a plain Python container (a list at 32bf0d8, a dict after the Wrapyfi
port), so ``ESR.eval()`` never reaches them: at inference the branches' BatchNorm layers normalise with the
statistics of the batch, which upstream always feeds one face at a time. ``ESR9.forward`` reproduces that
per image (``branch_batch_stats``), so a batch of faces gives each face exactly the output it had alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from emotalker.models.weights import CheckpointError, check_state_dict

BASE_FILE = "Net-Base-Shared_Representations.pt"
BRANCH_FILE = "Net-Branch_{}.pt"
NUM_BRANCHES = 9
INPUT_SIZE = 96  # upstream ESR.INPUT_IMAGE_SIZE = (96, 96)
# upstream model/utils/udata.py AffectNetCategorical.get_class, index order of ``fc``
AFFECTNET_CLASSES: tuple[str, ...] = (
    "Neutral",
    "Happy",
    "Sad",
    "Surprise",
    "Fear",
    "Disgust",
    "Anger",
    "Contempt",
)
ESR9_HELP = (
    "download the ESR-9 weights (model/ml/trained_models/esr_9/ of siqueira-hc/Efficient-Facial-Feature-"
    f"Learning-with-Wide-Ensemble-based-Convolutional-Neural-Networks: {BASE_FILE} and "
    f"{BRANCH_FILE.format('1')} .. {BRANCH_FILE.format(NUM_BRANCHES)}) into one folder"
)


def esr9_files() -> list[str]:
    """The 10 file names of the released weights, base first, then branches 1..9."""
    return [BASE_FILE] + [BRANCH_FILE.format(i) for i in range(1, NUM_BRANCHES + 1)]


class Base(nn.Module):
    """Shared low/mid-level layers: (B, 3, 96, 96) -> (B, 128, 20, 20)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 5, 1)
        self.conv2 = nn.Conv2d(64, 128, 3, 1)
        self.conv3 = nn.Conv2d(128, 128, 3, 1)
        self.conv4 = nn.Conv2d(128, 128, 3, 1)
        self.bn1 = nn.BatchNorm2d(64)
        self.bn2 = nn.BatchNorm2d(128)
        self.bn3 = nn.BatchNorm2d(128)
        self.bn4 = nn.BatchNorm2d(128)
        self.pool = nn.MaxPool2d(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.pool(F.relu(self.bn2(self.conv2(x))))
        x = F.relu(self.bn3(self.conv3(x)))
        return self.pool(F.relu(self.bn4(self.conv4(x))))


class ConvolutionalBranch(nn.Module):
    """One ensemble member: shared features -> (8 emotion logits, 2 affect values)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(128, 128, 3, 1)
        self.conv2 = nn.Conv2d(128, 256, 3, 1)
        self.conv3 = nn.Conv2d(256, 256, 3, 1)
        self.conv4 = nn.Conv2d(256, 512, 3, 1, 1)
        self.bn1 = nn.BatchNorm2d(128)
        self.bn2 = nn.BatchNorm2d(256)
        self.bn3 = nn.BatchNorm2d(256)
        self.bn4 = nn.BatchNorm2d(512)
        self.fc = nn.Linear(512, 8)
        self.fc_dimensional = nn.Linear(8, 2)
        self.pool = nn.MaxPool2d(2, 2)
        self.global_pool = nn.AdaptiveAvgPool2d(1)

    @staticmethod
    def _norm(bn: nn.BatchNorm2d, x: torch.Tensor, per_image: bool) -> torch.Tensor:
        """``per_image``: what a train-mode BatchNorm does to a batch of ONE image (each channel
        normalised by that image's own spatial mean and biased variance), without touching the running
        statistics; else the module's own mode."""
        if not per_image:
            return bn(x)
        return F.instance_norm(x, weight=bn.weight, bias=bn.bias, use_input_stats=True, eps=bn.eps)

    def forward(self, x: torch.Tensor, per_image_stats: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 128, 20, 20) -> ((B, 8) emotion logits, (B, 2) valence/arousal)."""
        x = F.relu(self._norm(self.bn1, self.conv1(x), per_image_stats))
        x = self.pool(F.relu(self._norm(self.bn2, self.conv2(x), per_image_stats)))
        x = F.relu(self._norm(self.bn3, self.conv3(x), per_image_stats))
        x = self.global_pool(F.relu(self._norm(self.bn4, self.conv4(x), per_image_stats))).flatten(1)
        emotion = self.fc(x)
        return emotion, self.fc_dimensional(F.relu(emotion))


class ESR9(nn.Module):
    """Base + 9 branches. ``branch_batch_stats`` (default, upstream's behaviour) normalises the branches
    with each image's own statistics; False uses their running statistics (what ``eval()`` would have
    done had upstream registered the branches)."""

    def __init__(self, branch_batch_stats: bool = True) -> None:
        super().__init__()
        self.base = Base()
        self.convolutional_branches = nn.ModuleList(ConvolutionalBranch() for _ in range(NUM_BRANCHES))
        self.branch_batch_stats = branch_batch_stats

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, 96, 96) BGR in [0, 1] -> ((B, 9, 8) emotion logits, (B, 9, 2) affect) per branch."""
        shared = self.base(x)
        outputs = [b(shared, per_image_stats=self.branch_batch_stats) for b in self.convolutional_branches]
        return torch.stack([e for e, _ in outputs], 1), torch.stack([a for _, a in outputs], 1)


def _read_state(path: Path) -> Mapping[str, Any]:
    """One released file as a tensors-only state dict, or a one-line error naming it."""
    if not path.is_file():
        raise FileNotFoundError(f"ESR-9 weights incomplete: {path} is missing; {ESR9_HELP}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise CheckpointError(f"{path} is not a readable state dict ({first}); {ESR9_HELP}") from exc
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a state dict; {ESR9_HELP}")
    return state


def load_esr9(
    folder: str | Path, device: str | torch.device = "cpu", branch_batch_stats: bool = True
) -> ESR9:
    """ESR-9 from a folder of the 10 released state dicts, each checked strictly (keys and shapes) against
    its module; returned in eval mode (the base uses its running statistics, as upstream's does).

    A file without ``*.num_batches_tracked`` (saved by a PyTorch older than 0.4.1) gets them as zeros, as
    ``BatchNorm`` itself fills them on load; that buffer is never read here.
    """
    folder = Path(folder).expanduser()
    model = ESR9(branch_batch_stats=branch_batch_stats)
    modules: list[nn.Module] = [model.base, *model.convolutional_branches]
    for module, name in zip(modules, esr9_files(), strict=True):
        path = folder / name
        state = dict(_read_state(path))
        for key, value in module.state_dict().items():
            if key.endswith("num_batches_tracked") and key not in state:
                state[key] = torch.zeros_like(value)
        check_state_dict(module, state, str(path), hint=ESR9_HELP)
        module.load_state_dict(state, strict=True)
    return model.to(device).eval()
