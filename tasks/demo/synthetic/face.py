"""Ground-truth motion and a cartoon face rendered from it, for the MEAD-shaped demo set.

The renderer is driven by a 70-dim motion vector per 30 fps frame laid out like the real 3DMM motion
(exp 64 | angle 3 | trans 3, see ``emotalker.configs.constants``),
so downstream branches have learnable targets:

* lip expression indices (``LIP_INDICES``) carry the mouth: ``exp[0]`` jaw opening (follows the smoothed
  speech RMS envelope), ``exp[1]`` lip spread (follows high-frequency energy); the other 11 lip indices are
  fixed linear mixes of those two, as real 3DMM coefficients are correlated;
* non-lip expression indices carry the emotion: ``exp[6]`` brow raise, ``exp[8]`` brow tilt (inner end
  down), ``exp[15]`` smile (mouth corners), ``exp[16]`` eye openness (plus blinks), ``exp[17]`` smirk
  (one corner); the other 46 non-lip indices are fixed mixes of those five plus small smooth noise;
* angle = (pitch, yaw, roll) in radians and trans = (x, y, z) (x/y in image widths, z a scale change) follow
  a smooth trajectory whose offset and energy depend on the emotion, with a small speech-coupled nod.

Everything is a pure function of its inputs and an explicit random generator, so the data is deterministic.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter1d

from emotalker.configs.constants import EMOTIONS, EXP_DIM, LIP_INDICES, MOTION_DIM, NON_LIP_EXP_INDICES, VIEWS
from emotalker.tasks.features.ground_truth import VIEW_ANGLES

# Motion indices the renderer reads.
JAW = 0
SPREAD = 1
BROW_RAISE = 6
BROW_TILT = 8
SMILE = 15
EYE_OPEN = 16
SMIRK = 17
CONTROL_INDICES: tuple[int, ...] = (BROW_RAISE, BROW_TILT, SMILE, EYE_OPEN, SMIRK)
ANGLE = slice(EXP_DIM, EXP_DIM + 3)  # pitch, yaw, roll
TRANS = slice(EXP_DIM + 3, MOTION_DIM)  # x, y, z
assert JAW in LIP_INDICES and SPREAD in LIP_INDICES
assert all(i in NON_LIP_EXP_INDICES for i in CONTROL_INDICES)

# Facial controls at full intensity (MEAD level 3): brow raise, brow tilt, smile, eye openness, smirk.
EMOTION_FACE: dict[str, tuple[float, float, float, float, float]] = {
    "neutral": (0.0, 0.0, 0.0, 0.0, 0.0),
    "angry": (-0.5, 1.0, -0.5, 0.4, 0.0),
    "contempt": (0.15, 0.2, 0.0, -0.35, 1.0),
    "disgusted": (-0.6, 0.6, -0.9, -0.7, 0.3),
    "fear": (0.9, -0.7, -0.4, 1.0, 0.0),
    "happy": (0.25, -0.2, 1.0, -0.45, 0.0),
    "sad": (0.2, -1.0, -0.9, -0.35, 0.0),
    "surprised": (1.1, -0.3, 0.0, 1.1, 0.0),
}
# Mouth: jaw-gain change and constant jaw offset at full intensity.
EMOTION_MOUTH: dict[str, tuple[float, float]] = {
    "neutral": (1.0, 0.0),
    "angry": (1.25, 0.05),
    "contempt": (0.8, 0.0),
    "disgusted": (0.85, 0.05),
    "fear": (1.0, 0.15),
    "happy": (1.15, 0.05),
    "sad": (0.7, 0.0),
    "surprised": (1.3, 0.3),
}
# Head pose offset (pitch, yaw, roll, tx, ty, tz) at full intensity and the sway energy multiplier.
EMOTION_POSE: dict[str, tuple[tuple[float, float, float, float, float, float], float]] = {
    "neutral": ((0.0, 0.0, 0.0, 0.0, 0.0, 0.0), 1.0),
    "angry": ((0.10, 0.0, 0.0, 0.0, 0.01, 0.08), 1.6),
    "contempt": ((-0.06, 0.14, 0.08, 0.01, 0.0, 0.0), 0.8),
    "disgusted": ((-0.05, -0.12, -0.03, -0.01, 0.0, -0.06), 0.9),
    "fear": ((0.08, -0.06, 0.0, 0.0, 0.01, -0.12), 1.2),
    "happy": ((-0.04, 0.0, -0.07, 0.0, 0.0, 0.03), 1.4),
    "sad": ((0.16, 0.0, 0.03, 0.0, 0.02, -0.04), 0.5),
    "surprised": ((-0.09, 0.0, 0.0, 0.0, -0.01, -0.08), 1.2),
}
assert set(VIEW_ANGLES) == set(VIEWS) and set(EMOTION_FACE) == set(EMOTIONS)

_POSE_SWAY = np.array([0.045, 0.06, 0.03, 0.012, 0.01, 0.025])  # per-dim sway amplitude (energy 1)
_LEVEL_INTENSITY = {1: 0.4, 2: 0.7, 3: 1.0}


@lru_cache(maxsize=1)
def _mixing() -> tuple[np.ndarray, np.ndarray, tuple[int, ...], tuple[int, ...]]:
    """Fixed (seed-independent) matrices spreading the controls over the remaining exp indices."""
    rng = np.random.default_rng(20_240_601)
    lip_rest = tuple(i for i in LIP_INDICES if i not in (JAW, SPREAD))
    face_rest = tuple(i for i in NON_LIP_EXP_INDICES if i not in CONTROL_INDICES)
    lip_mix = rng.normal(0.0, 0.35, size=(len(lip_rest), 2))
    face_mix = rng.normal(0.0, 0.3, size=(len(face_rest), len(CONTROL_INDICES)))
    return lip_mix, face_mix, lip_rest, face_rest


def _smooth_noise(rng: np.random.Generator, n: int, dims: int, sigma_frames: float) -> np.ndarray:
    """Unit-variance low-pass noise (n, dims)."""
    x = gaussian_filter1d(rng.normal(size=(n + 6 * int(sigma_frames) + 2, dims)), sigma_frames, axis=0)
    x = x[3 * int(sigma_frames) + 1 : 3 * int(sigma_frames) + 1 + n]
    return x / (x.std(axis=0, keepdims=True) + 1e-9)


def _blinks(rng: np.random.Generator, n: int, fps: float) -> np.ndarray:
    """Eye-openness dips (0 .. -2.2) at random 2-5 s intervals."""
    out = np.zeros(n)
    t = rng.uniform(0.3, 2.0) * fps
    frames = np.arange(n)
    while t < n:
        out -= 2.2 * np.exp(-0.5 * ((frames - t) / 1.2) ** 2)
        t += rng.uniform(2.0, 5.0) * fps
    return out


def build_motion(
    envelope: np.ndarray,
    brightness: np.ndarray,
    emotion: str,
    level: int,
    rng: np.random.Generator,
    fps: float = 30.0,
) -> np.ndarray:
    """(T, 70) float32 motion for one clip from the speech envelope/brightness and the emotion/level."""
    if emotion not in EMOTION_FACE:
        raise ValueError(f"unknown emotion {emotion!r}; MEAD has {list(EMOTIONS)}")
    if level not in _LEVEL_INTENSITY:
        raise ValueError(f"unknown level {level!r}; MEAD has {sorted(_LEVEL_INTENSITY)}")
    env = np.asarray(envelope, np.float64)
    bright = np.asarray(brightness, np.float64)
    if env.ndim != 1 or env.shape != bright.shape or len(env) == 0:
        raise ValueError(f"envelope {env.shape} and brightness {bright.shape} must be equal non-empty 1-D")
    n = len(env)
    w = 0.0 if emotion == "neutral" else _LEVEL_INTENSITY[level]
    lip_mix, face_mix, lip_rest, face_rest = _mixing()
    motion = np.zeros((n, MOTION_DIM))

    gain, bias = EMOTION_MOUTH[emotion]
    jaw = w * bias + env * (1.0 + (gain - 1.0) * w)
    spread = np.clip((bright - 0.15) * 4.0, -1.0, 1.0) * env
    motion[:, JAW] = jaw
    motion[:, SPREAD] = spread
    motion[:, list(lip_rest)] = np.stack([jaw, spread], axis=1) @ lip_mix.T

    controls = w * np.asarray(EMOTION_FACE[emotion])[None, :] + 0.06 * _smooth_noise(rng, n, 5, 8.0)
    controls[:, 0] += 0.25 * w * (env - env.mean())  # brows move a little with emphasis
    controls[:, 3] += _blinks(rng, n, fps)
    motion[:, list(CONTROL_INDICES)] = controls
    motion[:, list(face_rest)] = controls @ face_mix.T + 0.03 * _smooth_noise(rng, n, len(face_rest), 6.0)

    offset, energy = EMOTION_POSE[emotion]
    energy = 1.0 + (energy - 1.0) * w
    t = np.arange(n) / fps
    sway = np.zeros((n, 6))
    for d in range(6):
        for _ in range(3):
            f, ph, amp = rng.uniform(0.15, 0.9), rng.uniform(0, 2 * np.pi), rng.uniform(0.4, 1.0)
            sway[:, d] += amp * np.sin(2 * np.pi * f * t + ph) / np.sqrt(3)
    pose = w * np.asarray(offset)[None, :] + energy * sway * _POSE_SWAY[None, :]
    slow_env = gaussian_filter1d(env, 4.0, mode="nearest")
    pose[:, 0] += 0.03 * (slow_env - slow_env.mean())  # nod with speech
    motion[:, EXP_DIM:] = pose
    return motion.astype(np.float32)


# ------------------------------------------------------------------------------------------ identity


@dataclass(frozen=True)
class Identity:
    """Per-actor look: colours (RGB) and proportions (in units of the face half-width)."""

    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    background: tuple[int, int, int]
    shirt: tuple[int, int, int]
    iris: tuple[int, int, int]
    lips: tuple[int, int, int]
    long_hair: bool
    face_scale: float
    aspect: float
    eye_gap: float
    eye_width: float
    mouth_width: float
    brow_thickness: float


_SKINS = ((241, 194, 167), (224, 172, 140), (198, 134, 100), (160, 110, 80), (120, 82, 60), (250, 212, 186))
_HAIRS = ((35, 30, 30), (90, 60, 40), (200, 170, 110), (140, 70, 40), (150, 150, 150), (60, 40, 30))
_BACKS = ((70, 90, 120), (110, 120, 100), (130, 110, 120), (90, 100, 110), (120, 120, 130), (80, 110, 110))
_SHIRTS = ((40, 60, 110), (120, 40, 40), (50, 90, 60), (90, 90, 90), (150, 120, 60), (70, 50, 100))
_IRISES = ((90, 60, 30), (60, 100, 150), (70, 110, 70), (50, 40, 30))


def identity_for_actor(actor: str, seed: int) -> Identity:
    """A fixed look per (actor, seed); ``W`` actors get long hair."""
    if not actor:
        raise ValueError("actor id must be non-empty")
    rng = np.random.default_rng([zlib.crc32(actor.encode()), seed, 7])

    def pick(options: tuple[tuple[int, int, int], ...]) -> tuple[int, int, int]:
        return options[int(rng.integers(len(options)))]

    skin = pick(_SKINS)
    lips = tuple(int(c) for c in np.clip(np.array(skin) * np.array([0.85, 0.55, 0.6]) + [20, 0, 0], 0, 255))
    return Identity(
        skin=skin,
        hair=pick(_HAIRS),
        background=pick(_BACKS),
        shirt=pick(_SHIRTS),
        iris=pick(_IRISES),
        lips=lips,  # type: ignore[arg-type]
        long_hair=actor[0] == "W",
        face_scale=float(rng.uniform(0.92, 1.04)),
        aspect=float(rng.uniform(1.24, 1.36)),
        eye_gap=float(rng.uniform(0.31, 0.36)),
        eye_width=float(rng.uniform(0.13, 0.16)),
        mouth_width=float(rng.uniform(0.9, 1.1)),
        brow_thickness=float(rng.uniform(0.055, 0.08)),
    )


# ------------------------------------------------------------------------------------------ rendering

_SHIFT = 4  # sub-pixel bits for OpenCV drawing
_CIRCLE_T = np.linspace(0, 2 * np.pi, 20, endpoint=False)


def _ipts(p: np.ndarray) -> np.ndarray:
    return np.round(p * (1 << _SHIFT)).astype(np.int32).reshape(-1, 1, 2)


def _rotation(pitch: float, yaw: float, roll: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = (
        np.cos(pitch),
        np.sin(pitch),
        np.cos(yaw),
        np.sin(yaw),
        np.cos(roll),
        np.sin(roll),
    )
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


@lru_cache(maxsize=16)
def _background(colour: tuple[int, int, int], size: int) -> np.ndarray:
    ramp = np.linspace(1.12, 0.85, size)[:, None, None]
    img = np.clip(np.array(colour, np.float64)[None, None, :] * ramp, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(np.broadcast_to(img, (size, size, 3)))


class _Head:
    """Maps face-plane coordinates (units of the face half-width, y down) onto the rotated head."""

    def __init__(self, centre: np.ndarray, a: float, aspect: float, rot: np.ndarray) -> None:
        self.centre, self.a, self.aspect, self.rot = centre, a, aspect, rot
        self.depth = 0.95

    def surface(self, xy: np.ndarray, extra: np.ndarray | float = 0.0) -> np.ndarray:
        pts = np.empty(xy.shape[:-1] + (3,))
        pts[..., :2] = xy
        pts[..., 2] = self.depth * np.sqrt(
            np.maximum(1.0 - xy[..., 0] ** 2 - (xy[..., 1] / self.aspect) ** 2, 0.02)
        )
        pts[..., 2] += extra
        return pts @ self.rot.T

    def project(self, xy: np.ndarray, extra: np.ndarray | float = 0.0) -> np.ndarray:
        return self.centre + self.a * self.surface(xy, extra)[..., :2]


def _lens(width: float, up: float, down: float, n: int = 16) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x samples and the upper/lower curves of an almond shape centred at 0."""
    x = np.linspace(-width, width, n)
    s = np.clip(1.0 - (x / width) ** 2, 0.0, 1.0)
    return x, -up * s**0.8, down * s**0.9


def render_frame(motion: np.ndarray, identity: Identity, size: int = 256, view: str = "front") -> np.ndarray:
    """One RGB uint8 (size, size, 3) frame of the cartoon face for a 70-dim motion vector."""
    if motion.shape != (MOTION_DIM,):
        raise ValueError(f"expected a ({MOTION_DIM},) motion vector, got {motion.shape}")
    if view not in VIEW_ANGLES:
        raise ValueError(f"unknown view {view!r}; MEAD has {list(VIEWS)}")
    m = motion.astype(np.float64)
    pitch, yaw, roll = m[ANGLE]
    vp, vy = VIEW_ANGLES[view]
    pitch, yaw = pitch + vp, yaw + vy
    tx, ty, tz = m[TRANS]
    jaw = float(np.clip(m[JAW], 0.0, 1.8))
    spread, brow_raise, brow_tilt = float(m[SPREAD]), float(m[BROW_RAISE]), float(m[BROW_TILT])
    smile, eye_open, smirk = float(m[SMILE]), float(m[EYE_OPEN]), float(m[SMIRK])

    idn = identity
    img = _background(idn.background, size).copy()
    aa = cv2.LINE_AA
    a = 0.25 * size * idn.face_scale * (1.0 + tz)
    centre = np.array([0.5 * size + tx * size, 0.47 * size + ty * size])
    head = _Head(centre, a, idn.aspect, _rotation(pitch, yaw, roll))
    roll_deg = float(np.degrees(roll))
    s = 1 << _SHIFT

    def ellipse(c: np.ndarray, axes: tuple[float, float], angle: float, colour: tuple[int, int, int]) -> None:
        cv2.ellipse(
            img,
            (int(round(c[0] * s)), int(round(c[1] * s))),
            (max(int(round(axes[0] * s)), 1), max(int(round(axes[1] * s)), 1)),
            angle,
            0,
            360,
            colour,
            -1,
            aa,
            _SHIFT,
        )

    def poly(p: np.ndarray, colour: tuple[int, int, int]) -> None:
        cv2.fillPoly(img, [_ipts(p)], colour, aa, _SHIFT)

    def line(p: np.ndarray, colour: tuple[int, int, int], thickness: float) -> None:
        cv2.polylines(img, [_ipts(p)], False, colour, max(int(round(thickness)), 1), aa, _SHIFT)

    dark_skin = tuple(int(c * 0.72) for c in idn.skin)
    # Torso and neck move with translation only.
    body_c = np.array([centre[0], size * 1.08])
    ellipse(body_c, (0.46 * size, 0.26 * size), 0.0, idn.shirt)
    neck = np.array([[-0.38, 0.6], [0.38, 0.6], [0.42, 1.75], [-0.42, 1.75]]) * a + centre
    poly(neck, dark_skin)  # type: ignore[arg-type]

    # Silhouette: the rotated ellipsoid's outline, slightly longer when the jaw drops.
    ax = a * np.hypot(np.cos(yaw), head.depth * np.sin(yaw))
    ay = a * (np.hypot(idn.aspect * np.cos(pitch), head.depth * np.sin(pitch)) + 0.06 * jaw)
    if idn.long_hair:
        back = centre + _rotation(0, 0, roll)[:2, :2] @ np.array([0.0, -0.05 * a])
        ellipse(back, (1.2 * ax, 0.98 * ay), roll_deg, idn.hair)
    for side in (-1.0, 1.0):
        ear = head.centre + a * (np.array([side * 1.0, 0.0, 0.0]) @ head.rot.T)[:2]
        ellipse(ear, (0.15 * a, 0.26 * a), roll_deg, dark_skin)  # type: ignore[arg-type]
    face_c = centre + _rotation(0, 0, roll)[:2, :2] @ np.array([0.0, 0.03 * jaw * a])
    ellipse(face_c, (ax, ay), roll_deg, idn.skin)

    # Everything on the head surface is collected first and projected in one batch (speed), then drawn.
    shapes: list[tuple[str, np.ndarray, np.ndarray | float, tuple[int, int, int], float]] = []

    def on_head(
        kind: str,
        xy: np.ndarray,
        colour: tuple[int, int, int],
        extra: np.ndarray | float = 0.0,
        thickness: float = 0.0,
    ) -> None:
        shapes.append((kind, xy, extra, colour, thickness))

    # Hair cap: the top of the silhouette down to a hairline drawn on the head surface.
    hx = np.linspace(0.98, -0.98, 24)
    on_head("hair", np.stack([hx, -0.62 * idn.aspect + 0.22 * hx**2 * idn.aspect], axis=1), idn.hair)

    probes = np.array([[-0.3, -0.4], [0.3, -0.4], [-idn.eye_gap, -0.22], [idn.eye_gap, -0.22]])
    facing = head.surface(probes)[:, 2] > 0.05
    brow_colour: tuple[int, int, int] = tuple(int(c * 0.55) for c in idn.hair)  # type: ignore[assignment]
    # Eyebrows: raise lifts them, tilt lowers the inner ends (anger) or raises them (sadness, fear).
    by = np.array([-0.47, -0.53, -0.48]) - 0.13 * brow_raise + np.array([0.09, 0.0, -0.04]) * brow_tilt
    for k, side in enumerate((-1.0, 1.0)):
        if facing[k]:
            bx = side * np.array([0.1, 0.3, 0.52])
            on_head("line", np.stack([bx, by], axis=1), brow_colour, 0.03, idn.brow_thickness * a)

    # Eyes: almond whites, iris/pupil clipped to the opening, upper lid line.
    openness = float(np.clip(0.75 + 0.3 * eye_open, 0.03, 1.35))
    x, up, low = _lens(idn.eye_width, 0.085 * openness, 0.06 * openness)
    circle = np.stack([np.cos(_CIRCLE_T), np.sin(_CIRCLE_T)], 1)
    for k, side in enumerate((-1.0, 1.0)):
        if not facing[2 + k]:
            continue
        ex, ey = side * idn.eye_gap, -0.22
        outline = np.concatenate(
            [np.stack([x + ex, up + ey], 1), np.stack([x[::-1] + ex, low[::-1] + ey], 1)]
        )
        on_head("poly", outline, (245, 245, 240))
        for radius, colour in ((0.062, idn.iris), (0.028, (15, 15, 15))):
            cxy = radius * circle
            cyy = np.clip(cxy[:, 1], np.interp(cxy[:, 0], x, up), np.interp(cxy[:, 0], x, low))
            if np.ptp(cyy) > 1e-3:
                on_head("poly", np.stack([cxy[:, 0] + ex, cyy + ey], 1), colour)
        on_head("line", np.stack([x + ex, up + ey], 1), (40, 30, 30), 0.0, 0.035 * a)

    # Nose: bridge line and base, with the tip standing out so yaw is visible.
    nose = np.array([[-0.04, -0.12], [-0.07, 0.14], [-0.09, 0.2], [0.0, 0.24], [0.09, 0.2]])
    on_head("line", nose, dark_skin, np.array([0.05, 0.2, 0.14, 0.22, 0.14]), 0.035 * a)  # type: ignore[arg-type]

    # Mouth: corners from smile/smirk, width from spread, opening from the jaw.
    half = 0.3 * idn.mouth_width * (1.0 + 0.15 * spread + 0.12 * max(smile, 0.0))
    x = np.linspace(-half, half, 21)
    u = x / half
    lift = np.where(u < 0, 0.1 * smile, 0.1 * smile + 0.12 * smirk) * u**2
    gap = 0.32 * jaw * np.clip(1.0 - u**2, 0.0, 1.0) ** 0.7
    my = 0.55 * idn.aspect / 1.3
    ui = my - lift - 0.25 * gap
    li = my - lift + 0.75 * gap
    thick = np.clip(1.0 - u**2, 0.0, 1.0) ** 0.5
    uo = ui - 0.055 * thick - 0.015 * np.cos(np.pi * u) * thick  # small cupid's bow
    lo = li + 0.075 * thick
    xr = x[::-1]
    on_head("poly", np.concatenate([np.stack([x, uo], 1), np.stack([xr, lo[::-1]], 1)]), idn.lips, 0.02)
    if jaw > 0.02:
        on_head(
            "poly", np.concatenate([np.stack([x, ui], 1), np.stack([xr, li[::-1]], 1)]), (55, 18, 22), 0.02
        )
        teeth = ui + np.minimum(0.45 * gap, 0.05)
        on_head(
            "poly",
            np.concatenate([np.stack([x, ui], 1), np.stack([xr, teeth[::-1]], 1)]),
            (235, 230, 220),
            0.02,
        )
    else:
        on_head("line", np.stack([x, ui], 1), (90, 35, 40), 0.02, 0.02 * a)

    sizes = [len(sh[1]) for sh in shapes]
    xy_all = np.concatenate([sh[1] for sh in shapes])
    extra_all = np.concatenate(
        [np.broadcast_to(np.asarray(sh[2], np.float64), (n,)) for sh, n in zip(shapes, sizes, strict=True)]
    )
    projected = np.split(head.project(xy_all, extra_all), np.cumsum(sizes)[:-1])
    for (kind, _, _, colour, thickness), pts in zip(shapes, projected, strict=True):
        if kind == "hair":
            th = np.linspace(np.pi + 0.15, 2 * np.pi - 0.15, 24)
            arc = np.stack([1.02 * ax * np.cos(th), 1.02 * ay * np.sin(th)], axis=1)
            arc = face_c + arc @ _rotation(0, 0, roll)[:2, :2].T
            poly(np.concatenate([arc, pts]), colour)
        elif kind == "poly":
            poly(pts, colour)
        else:
            line(pts, colour, thickness)
    return img
