"""The demo's SadTalker audio2exp (ExpNet), trained on synthetic speech the way SadTalker's was on real video.

The released ``audio2exp`` was trained by SadTalker's authors to predict 3DMM expressions from mel windows;
the paper freezes its audio encoder (Phi_A) and fine-tunes only the mappings. A random stand-in frozen the
same way cannot follow the speech, so the demo's lips stayed at the floor (issue 28). The stand-in in
``SadTalker_V0.0.2_256.safetensors`` is therefore trained first, whole, on the training actors' synthetic
speech and the mouth motion the synthetic world derives from it (Phi_A and Phi_M1: mel window + reference
expression -> 64 expression coefficients), and written back under ``audio2exp.netG.`` with every other
tensor of the file unchanged. The held-out actors' lip L2 before and after, beside the training mean's and
the trained model's with the held-out mel windows shuffled across frames (the negative control: lips that
follow the speech lose their advantage when the speech is another frame's), is recorded in
``AUDIO2EXP_RECORD`` next to the file.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from emotalker.configs.constants import EXP_DIM, FPS, LIP_INDICES
from emotalker.models.lip import ExpNet, load_sadtalker_audio2exp
from emotalker.tasks.demo.standins.emotion_hubert import Utterance, speak
from emotalker.tasks.demo.synthetic.face import build_motion
from emotalker.tasks.demo.synthetic.speech import fit_to_frames, speech_brightness, speech_envelope
from emotalker.tasks.features.mel import mel_windows, melspectrogram

AUDIO2EXP_RECORD = "audio2exp_pretraining.json"  # written beside the safetensors
SECTION = "audio2exp.netG."
RATE = 16_000


def exp_pairs(utterances: list[Utterance], seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per video frame (25 fps): mel windows (N, 80, 16), the expression (N, 64) the synthetic world moves
    with that speech, and each frame's reference expression (the utterance's first frame, a closed mouth
    in the leading silence, as SadTalker's reference is the source image's)."""
    mels, exps, refs = [], [], []
    for i, u in enumerate(utterances):
        audio = fit_to_frames(u.wave, RATE, FPS)
        env, bright = speech_envelope(audio, RATE, FPS), speech_brightness(audio, RATE, FPS)
        exp = build_motion(env, bright, u.emotion, u.level, np.random.default_rng([seed, i]), fps=FPS)[
            :, :EXP_DIM
        ]
        mels.append(mel_windows(melspectrogram(audio), len(exp)))
        exps.append(exp)
        refs.append(np.repeat(exp[:1], len(exp), axis=0))
    return np.concatenate(mels), np.concatenate(exps), np.concatenate(refs)


def lip_l2(net: ExpNet, mel: np.ndarray, ref: np.ndarray, exp: np.ndarray, batch: int = 256) -> float:
    """Mean per-frame L2 of the 13 lip coefficients (LipL2's definition) on the given frames."""
    lip = list(LIP_INDICES)
    was_training = net.training
    net.eval()
    with torch.inference_mode():
        pred = torch.cat(
            [
                net(torch.from_numpy(mel[i : i + batch])[:, None], torch.from_numpy(ref[i : i + batch]))
                for i in range(0, len(mel), batch)
            ]
        ).numpy()
    net.train(was_training)
    return float(np.linalg.norm(pred[:, lip] - exp[:, lip], axis=1).mean())


def pretrain_audio2exp(
    safetensors: str | Path,
    *,
    train_actors: list[str],
    held_out_actors: list[str],
    seed: int = 0,
    speech_seed: int | None = None,
    steps: int = 150,
    batch_size: int = 32,
    lr: float = 2e-3,
) -> dict[str, Any]:
    """Train the ExpNet stored in ``safetensors`` on the training actors' speech, write it back, and return
    (and record) the held-out lip L2 before and after, the training mean's, and after with shuffled audio.
    ``speech_seed`` (default ``seed``) picks the voices and sentences as the generator did for its clips."""
    from safetensors.torch import load_file, save_file

    t0 = time.perf_counter()
    path = Path(safetensors)
    voices = seed if speech_seed is None else speech_seed
    mel, exp, ref = exp_pairs(speak(train_actors, voices), seed)
    mel_ho, exp_ho, ref_ho = exp_pairs(speak(held_out_actors, voices), seed)
    rng = np.random.default_rng(seed)
    lip = list(LIP_INDICES)
    mean_l2 = float(np.linalg.norm(exp[:, lip].mean(0) - exp_ho[:, lip], axis=1).mean())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = ExpNet()
        load_sadtalker_audio2exp(net, path, strict=True)
        before = lip_l2(net, mel_ho, ref_ho, exp_ho)
        net.train()
        opt = torch.optim.AdamW(net.parameters(), lr=lr)
        for _ in range(steps):
            idx = rng.choice(len(mel), size=min(batch_size, len(mel)), replace=False)
            pred = net(torch.from_numpy(mel[idx])[:, None], torch.from_numpy(ref[idx]))
            loss = F.mse_loss(pred, torch.from_numpy(exp[idx]))
            opt.zero_grad()
            loss.backward()
            opt.step()
        after = lip_l2(net, mel_ho, ref_ho, exp_ho)
        shuffled = lip_l2(net, mel_ho[rng.permutation(len(mel_ho))], ref_ho, exp_ho)
    tensors = load_file(str(path))
    tensors |= {f"{SECTION}{k}": v.detach().contiguous() for k, v in net.state_dict().items()}
    save_file(tensors, str(path))
    record = {
        "held_out_lip_l2": {
            "before": before,
            "after": after,
            "training_mean": mean_l2,
            "after_shuffled_audio": shuffled,
        },
        "train_actors": train_actors,
        "held_out_actors": held_out_actors,
        "frames": {"train": len(mel), "held_out": len(mel_ho)},
        "steps": steps,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    (path.parent / AUDIO2EXP_RECORD).write_text(json.dumps(record, indent=2))
    return record
