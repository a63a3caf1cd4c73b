"""A small synthetic world in which talking-head motion is learnable from audio only, held in memory.

Used by the learning test (``tests/training/test_learning.py``). Per clip: an actor, an emotion and a
sequence of per-token "phonemes" c_j (one per motion token of l = 4 video frames, 8 HuBERT frames):

* audio features (HuBERT rate, 2 per video frame): the phoneme's embedding + the emotion's embedding +
  noise; content tokens: the phoneme id per HuBERT frame (an exact "k-means");
* face (57 coefficients): the actor's offset + the emotion's pattern + a pattern of
  s_j = (c_{j-1} + c_j) mod V. The face of token j depends on the audio of tokens j-1 and j, exactly the
  window the alignment mask ("authors") gives token j, and neither phoneme alone says anything about s_j,
  so a window shifted by one token (tokens j and j+1) leaves the face content unpredictable;
* lips (13 coefficients): the actor's offset + a linear map of a per-frame latent u_t (the phoneme's
  embedding + per-frame jitter) that the frame's (80, 16) mel window also carries.

The reference of a clip is a frame of a neutral clip of the same actor (what
``train.transformer.reference: neutral_clip`` and the lip branch's default draw), so the start token says
who is talking and nothing about the emotion. Stores are in-memory stand-ins with the
:class:`~emotalker.storage.zarr_store.FeatureStore` methods :class:`WindowDataset` reads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from emotalker.configs.constants import (
    AUDIO_FRAMES_PER_VIDEO_FRAME,
    EMOTION_TO_ID,
    FACE_INDICES,
    LIP_INDICES,
    MOTION_DIM,
)

WORLD_EMOTIONS = ("angry", "happy", "neutral", "sad")
FRAMES_PER_TOKEN = 4


class MemoryStore:
    """In memory, what :class:`WindowDataset` reads of a feature store: ``shape``, ``array``, ``has_clip``."""

    def __init__(self, family: str, arrays: dict[str, dict[str, np.ndarray]]) -> None:
        self.family = family
        self.arrays = arrays
        self.display_url = f"memory://{family}"

    def shape(self, clip_id: str, key: str) -> tuple[int, ...]:
        return tuple(self.arrays[clip_id][key].shape)

    def array(self, clip_id: str, key: str) -> np.ndarray:
        return self.arrays[clip_id][key]

    def has_clip(self, clip_id: str) -> bool:
        return clip_id in self.arrays


@dataclass
class Clip:
    clip_id: str
    actor: int
    emotion: str
    split: str
    take: int  # index among the clips of its (split, actor, emotion)
    motion: np.ndarray  # (T, 70)
    audio: np.ndarray  # (2T, audio_dim)
    tokens: np.ndarray  # (2T,) int64
    mel: np.ndarray  # (T, 80, 16)

    @property
    def label(self) -> int:
        return EMOTION_TO_ID[self.emotion]


@dataclass
class World:
    clips: dict[str, Clip]
    content_centres: np.ndarray  # (V, audio_dim): the "k-means" centres of the content tokens
    audio_dim: int
    references: dict[str, np.ndarray] = field(default_factory=dict)  # test clip -> (70,) neutral frame

    def ids(self, split: str) -> list[str]:
        return [c for c, clip in self.clips.items() if clip.split == split]

    def labels(self) -> dict[str, int]:
        return {c: clip.label for c, clip in self.clips.items()}

    def stores(self, audio_from: dict[str, str] | None = None) -> dict[str, Any]:
        """face/motion, hubert_emotion/feats, tokens/tokens, mel/windows; ``audio_from[c]`` names the clip
        whose audio (features, tokens and mel) clip ``c`` is given (the shuffled-audio control). The values
        are :class:`MemoryStore` objects, which stand where ``WindowDataset`` takes a ``FeatureStore``."""
        src = audio_from or {}

        def audio_of(c: str) -> Clip:
            return self.clips[src.get(c, c)]

        return {
            "face": MemoryStore("face", {c: {"motion": k.motion} for c, k in self.clips.items()}),
            "audio": MemoryStore("hubert_emotion", {c: {"feats": audio_of(c).audio} for c in self.clips}),
            "tokens": MemoryStore("tokens", {c: {"tokens": audio_of(c).tokens} for c in self.clips}),
            "mel": MemoryStore("mel", {c: {"windows": audio_of(c).mel} for c in self.clips}),
        }

    def shuffled_audio(self) -> dict[str, str]:
        """A permutation of the training clips' audio in which no clip keeps its own and every emotion's
        audio goes to each emotion's clips equally often (per actor, clip r of emotion e gets the audio of
        clip r + 1 of emotion e + r + 2 * actor): the audio says nothing of the clip's emotion, phonemes or
        lips, with no coincidental correlation left from a small sample."""
        n_e = len(WORLD_EMOTIONS)
        by_key = {(k.actor, k.emotion, k.take): c for c, k in self.clips.items() if k.split == "train"}
        takes = 1 + max(t for _, _, t in by_key)
        out = {}
        for (a, emotion, r), c in by_key.items():
            e = WORLD_EMOTIONS.index(emotion)
            out[c] = by_key[(a, WORLD_EMOTIONS[(e + r + 2 * a) % n_e], (r + 1) % takes)]
        assert sorted(out.values()) == sorted(out) and all(k != v for k, v in out.items())
        return out

    def mean_motion(self) -> np.ndarray:
        """The training split's (70,) mean frame (the mean-motion baseline)."""
        return np.concatenate([self.clips[c].motion for c in self.ids("train")]).mean(0).astype(np.float32)


class NeutralReferences:
    """``NeutralFrames.draw`` over the world: a frame of a neutral clip of the same actor, another clip
    than the one asked for."""

    def __init__(self, world: World, clip_ids: list[str]) -> None:
        self.world = world
        self.pool: dict[int, list[str]] = {}
        for c in sorted(clip_ids):
            clip = world.clips[c]
            if clip.emotion == "neutral":
                self.pool.setdefault(clip.actor, []).append(c)

    def draw(self, clip_id: str, pick: Callable[[int], int]) -> np.ndarray:
        pool = self.pool[self.world.clips[clip_id].actor]
        others = [c for c in pool if c != clip_id] or pool
        c = others[pick(len(others))]
        motion = self.world.clips[c].motion
        return motion[pick(len(motion))]


def cheap_audio_encoder() -> torch.nn.Module:
    """A stand-in for the Wav2Lip mel encoder Phi_A with its (N, 1, 80, 16) -> (N, 512, 1, 1) contract:
    the real one costs ~8 ms per frame on one core. Average-pools 10 x 4 mel cells, then a linear map."""
    return torch.nn.Sequential(torch.nn.AvgPool2d((10, 4)), torch.nn.Conv2d(1, 512, (8, 4)))


def make_world(
    *,
    seed: int = 0,
    actors: int = 2,
    train_per_emotion: int = 6,
    test_per_emotion: int = 2,
    tokens_per_clip: int = 16,
    phonemes: int = 4,
    audio_dim: int = 16,
    emotion_scale: float = 0.5,
    content_scale: float = 1.0,
    lip_latent: int = 3,
) -> World:
    """Train and test clips of every (actor, emotion); every quantity from one seeded generator."""
    rng = np.random.default_rng(seed)
    n_face, n_lip = len(FACE_INDICES), len(LIP_INDICES)
    emo_face = emotion_scale * rng.standard_normal((len(WORLD_EMOTIONS), n_face))
    content_face = content_scale * rng.standard_normal((phonemes, n_face))
    actor_motion = 0.3 * rng.standard_normal((actors, MOTION_DIM))
    emo_audio = rng.standard_normal((len(WORLD_EMOTIONS), audio_dim))
    phone_audio = rng.standard_normal((phonemes, audio_dim))
    phone_lip = rng.standard_normal((phonemes, lip_latent))
    lip_map = rng.standard_normal((lip_latent, n_lip)) / np.sqrt(lip_latent)
    mel_basis = rng.standard_normal((lip_latent, 8, 4))  # coarse mel patterns (10 x 4 cells each)

    rate = AUDIO_FRAMES_PER_VIDEO_FRAME
    t = tokens_per_clip * FRAMES_PER_TOKEN
    clips: dict[str, Clip] = {}
    for split, count in (("train", train_per_emotion), ("test", test_per_emotion)):
        for a in range(actors):
            for e, emotion in enumerate(WORLD_EMOTIONS):
                for r in range(count):
                    c = rng.integers(phonemes, size=tokens_per_clip)
                    s = (np.concatenate([c[:1], c[:-1]]) + c) % phonemes  # token 0's window: itself only
                    per_frame = np.repeat(np.arange(tokens_per_clip), FRAMES_PER_TOKEN)  # token of frame
                    motion = np.repeat(actor_motion[a][None], t, axis=0)
                    face = emo_face[e] + content_face[s[per_frame]]
                    motion[:, list(FACE_INDICES)] += face + 0.05 * rng.standard_normal((t, n_face))
                    u = phone_lip[c[per_frame]] + 0.7 * rng.standard_normal((t, lip_latent))
                    motion[:, list(LIP_INDICES)] += u @ lip_map
                    mel = np.einsum("tk,khw->thw", u, mel_basis)
                    mel = np.kron(mel, np.ones((1, 10, 4))) + 0.1 * rng.standard_normal((t, 80, 16))
                    phones = np.repeat(c, FRAMES_PER_TOKEN * rate)
                    audio = (
                        phone_audio[phones] + emo_audio[e] + 0.3 * rng.standard_normal((t * rate, audio_dim))
                    )
                    cid = f"{split}_a{a}_{emotion}_{r}"
                    clips[cid] = Clip(
                        cid,
                        a,
                        emotion,
                        split,
                        r,
                        motion.astype(np.float32),
                        audio.astype(np.float32),
                        phones.astype(np.int64),
                        mel.astype(np.float32),
                    )
    world = World(clips, phone_audio.astype(np.float32), audio_dim)
    neutral = NeutralReferences(world, world.ids("train"))
    for cid in world.ids("test"):  # a fixed neutral training frame of the same actor
        world.references[cid] = neutral.draw(cid, lambda n: n // 2).astype(np.float32)
    return world
