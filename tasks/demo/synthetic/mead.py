"""Per-actor archives shaped exactly like MEAD, plus the ground-truth motion they were rendered from.

Layout written under ``out_dir``::

    <actor>.tar                      outer archive, as MEAD distributes it
      video.tar                      (or video_1.tar + video_2.tar with ``video_split``)
        video/<view>/<emotion>/level_<n>/NNN.mp4     H.264 yuv420p, 30 fps
      audio.tar
        audio/<emotion>/level_<n>/NNN.m4a            AAC, 48 kHz mono
    ground_truth/<actor>.npz         kept outside the MEAD-shaped archive

The sidecar holds, per clip key ``<emotion>/level_<n>/<NNN>``, ``<key>/motion`` (T30, 70) float32 at 30 fps
(front view; exp 64 | angle 3 | trans 3), ``<key>/envelope`` (T30,) the smoothed speech RMS envelope the
mouth follows, and ``<key>/brightness`` (T30,); ``__meta__`` is a JSON string (sentences, voices, layout).
Neutral has level_1 only, as in MEAD. Archives and sidecars are byte-reproducible for a given seed: tar
members carry fixed mtimes/owners, the encoders run single-threaded with bit-exact muxing.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import tarfile
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emotalker.configs.constants import (
    EMOTION_TO_ID,
    EMOTIONS,
    LEVELS,
    MEAD_AUDIO_RATE,
    MEAD_VIDEO_FPS,
    VIEWS,
)
from emotalker.storage.files import atomic_path
from emotalker.tasks.demo.synthetic.face import (
    Identity,
    build_motion,
    identity_for_actor,
    render_frame,
)
from emotalker.tasks.demo.synthetic.speech import (
    SENTENCES,
    fit_to_frames,
    prosody_for,
    speech_brightness,
    speech_envelope,
    synthesize,
    voice_for_actor,
)
from emotalker.tasks.features.ground_truth import VIEW_ANGLES, clip_key, ground_truth_path
from emotalker.tasks.media import encode_mp4, write_m4a

FIXED_MTIME = 1_577_836_800  # 2020-01-01T00:00:00Z, for reproducible archives
_ZIP_DATE = (2020, 1, 1, 0, 0, 0)
ACTOR_RE = re.compile(r"^[MW]\d{3}$")
# bump when the generated clips change (speech, faces): the demo's mirror is written again and its
# stand-ins retrained on it (2: sentences drawn per speaker for the stand-ins, the voice colour)
GENERATOR_VERSION = 2


@dataclass(frozen=True)
class _ClipJob:
    actor: str
    emotion: str
    level: int
    number: int
    sentence: str
    seed: int
    image_size: int
    views: tuple[str, ...]
    identity: Identity
    stage: str  # staging root (str so the job pickles cheaply)


def clip_levels(emotion: str, levels: list[int] | tuple[int, ...]) -> list[int]:
    """Levels an emotion is recorded at: neutral only ever has level_1 (as in MEAD)."""
    return [1] if emotion == "neutral" else sorted(set(levels))


def clip_sentences(actor: str, emotion: str, level: int, seed: int, n: int = 1) -> list[str]:
    """The sentences of an actor's clips ``001``..``n`` of one emotion and level: drawn per actor, emotion
    and level, so no sentence stands for an emotion (a model could read the emotion from the words)."""
    pick = np.random.default_rng([seed, zlib.crc32(actor.encode()), EMOTION_TO_ID[emotion], level, 11])
    return [SENTENCES[i] for i in pick.permutation(len(SENTENCES))[:n]]


def _validate(
    *,
    actors: list[str],
    emotions: list[str],
    levels: list[int],
    sentences_per_level: int,
    image_size: int,
    views: tuple[str, ...],
    video_split: bool,
) -> None:
    choices: list[tuple[str, list[Any], Callable[[Any], bool], str]] = [
        ("actors", actors, lambda a: isinstance(a, str) and bool(ACTOR_RE.match(a)), "ids like 'W009'"),
        ("emotions", emotions, lambda e: e in EMOTIONS, f"one of MEAD's {list(EMOTIONS)}"),
        ("levels", levels, lambda lv: lv in LEVELS, f"one of MEAD's {list(LEVELS)}"),
    ]
    for name, values, valid, expected in choices:  # each a non-empty list of distinct MEAD values
        bad = [v for v in values if not valid(v)]
        if not values or bad:
            raise ValueError(f"{name} {'is empty' if not values else bad}: expected {expected}")
        if len(set(values)) != len(values):
            raise ValueError(f"duplicate {name} in {values}")
    if not 1 <= sentences_per_level <= len(SENTENCES):
        raise ValueError(f"sentences_per_level must be in 1..{len(SENTENCES)}, got {sentences_per_level}")
    if image_size < 64 or image_size % 2:
        raise ValueError(f"image_size must be an even number >= 64 (H.264 yuv420p), got {image_size}")
    if not views:
        raise ValueError(f"views is empty; choose from {list(VIEWS)}")
    bad = [v for v in views if v not in VIEWS]
    if bad:
        raise ValueError(f"unknown views {bad}; MEAD has {list(VIEWS)}")
    if video_split and len(emotions) < 2:
        raise ValueError(
            "video_split needs at least two emotions to split between video_1.tar and video_2.tar"
        )


# ------------------------------------------------------------------------------------------ encoding


def write_mp4(frames: np.ndarray, path: Path, fps: int = MEAD_VIDEO_FPS) -> None:
    """(T, H, W, 3) RGB uint8 -> H.264 yuv420p mp4 (single-threaded, bit-exact muxing: reproducible)."""
    encode_mp4(
        path,
        frames,
        size=(frames.shape[2], frames.shape[1]),
        fps=fps,
        codec_options={"preset": "veryfast", "crf": "18", "threads": "1"},
        bitexact=True,
    )


# ------------------------------------------------------------------------------------------ clips


def _clip_rng(seed: int, actor: str, emotion: str, level: int, number: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(actor.encode()), EMOTION_TO_ID[emotion], level, number])


def _render_clip(job: _ClipJob) -> tuple[str, dict[str, np.ndarray], dict[str, Any]]:
    """Speak, derive motion, render and encode one clip into the staging tree; return its ground truth."""
    rng = _clip_rng(job.seed, job.actor, job.emotion, job.level, job.number)
    voice = voice_for_actor(job.actor, job.seed)
    audio = fit_to_frames(synthesize(job.sentence, voice, prosody_for(job.emotion, job.level)))
    env = speech_envelope(audio)
    bright = speech_brightness(audio)
    motion = build_motion(env, bright, job.emotion, job.level, rng, fps=MEAD_VIDEO_FPS)
    name = f"{job.number:03d}"
    rel = Path(job.emotion) / f"level_{job.level}"
    stage = Path(job.stage)
    adir = stage / "audio" / rel
    adir.mkdir(parents=True, exist_ok=True)
    write_m4a(adir / f"{name}.m4a", audio, MEAD_AUDIO_RATE)
    for view in job.views:
        frames = np.stack([render_frame(m, job.identity, job.image_size, view) for m in motion])
        vdir = stage / "video" / view / rel
        vdir.mkdir(parents=True, exist_ok=True)
        write_mp4(frames, vdir / f"{name}.mp4")
    key = clip_key(job.emotion, job.level, name)
    arrays = {"motion": motion, "envelope": env, "brightness": bright}
    meta = {"sentence": job.sentence, "n_frames": len(motion), "n_samples": len(audio), "voice": voice.name}
    return key, arrays, meta


def _jobs_for_actor(
    actor: str,
    *,
    emotions: list[str],
    levels: list[int],
    sentences_per_level: int,
    seed: int,
    image_size: int,
    views: tuple[str, ...],
    stage: Path,
) -> list[_ClipJob]:
    identity = identity_for_actor(actor, seed)
    jobs = []
    for emotion in emotions:
        for level in clip_levels(emotion, levels):
            for number, sentence in enumerate(
                clip_sentences(actor, emotion, level, seed, sentences_per_level), start=1
            ):
                jobs.append(
                    _ClipJob(
                        actor,
                        emotion,
                        level,
                        number,
                        sentence,
                        seed,
                        image_size,
                        views,
                        identity,
                        str(stage),
                    )
                )
    return jobs


# ------------------------------------------------------------------------------------------ archives


def _tarinfo(name: str, size: int | None) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mtime = FIXED_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if size is None:
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
    else:
        info.size = size
        info.mode = 0o644
    return info


def _write_tar(dest: Path, files: dict[str, Path]) -> None:
    """A tar of ``arcname -> file`` with parent directory entries, sorted, fixed metadata."""
    entries: dict[tuple[str, ...], Path | None] = {}
    for arcname, src in files.items():
        parts = tuple(arcname.split("/"))
        for i in range(1, len(parts)):
            entries.setdefault(parts[:i], None)
        entries[parts] = src
    with tarfile.open(dest, "w", format=tarfile.GNU_FORMAT) as tf:
        for parts in sorted(entries):
            src = entries[parts]
            name = "/".join(parts)
            if src is None:
                tf.addfile(_tarinfo(name, None))
            else:
                with open(src, "rb") as fh:
                    tf.addfile(_tarinfo(name, src.stat().st_size), fh)


def _tree_files(root: Path, top: str, keep: Any = None) -> dict[str, Path]:
    """``{"<top>/...": path}`` for every file under ``root/top``, optionally filtered by ``keep(rel)``."""
    out = {}
    for p in sorted((root / top).rglob("*")):
        if p.is_file():
            rel = p.relative_to(root).as_posix()
            if keep is None or keep(rel):
                out[rel] = p
    return out


def _write_npz(dest: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez_compressed`` with fixed zip timestamps: identical content gives identical bytes."""
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(arrays[key]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue())


def _build_actor(
    actor: str,
    out_dir: Path,
    *,
    emotions: list[str],
    levels: list[int],
    sentences_per_level: int,
    seed: int,
    image_size: int,
    views: tuple[str, ...],
    video_split: bool,
    pool: ProcessPoolExecutor | None,
) -> Path:
    stage = Path(tempfile.mkdtemp(prefix=f".synth-{actor}-", dir=out_dir))
    try:
        jobs = _jobs_for_actor(
            actor,
            emotions=emotions,
            levels=levels,
            sentences_per_level=sentences_per_level,
            seed=seed,
            image_size=image_size,
            views=views,
            stage=stage,
        )
        results = list(pool.map(_render_clip, jobs)) if pool is not None else [_render_clip(j) for j in jobs]
        inner = stage / "_inner"
        inner.mkdir()
        members: dict[str, Path] = {}
        if video_split:
            ordered = [e for e in EMOTIONS if e in emotions]
            first = set(ordered[: (len(ordered) + 1) // 2])
            for part, chosen in ((1, first), (2, set(ordered) - first)):
                tar = inner / f"video_{part}.tar"
                _write_tar(tar, _tree_files(stage, "video", lambda rel, c=chosen: rel.split("/")[2] in c))
                members[tar.name] = tar
        else:
            _write_tar(inner / "video.tar", _tree_files(stage, "video"))
            members["video.tar"] = inner / "video.tar"
        _write_tar(inner / "audio.tar", _tree_files(stage, "audio"))
        members["audio.tar"] = inner / "audio.tar"

        arrays: dict[str, np.ndarray] = {}
        clips_meta: dict[str, Any] = {}
        for key, clip_arrays, meta in results:
            for name, value in clip_arrays.items():
                arrays[f"{key}/{name}"] = value
            clips_meta[key] = meta
        meta = {
            "version": GENERATOR_VERSION,
            "actor": actor,
            "seed": seed,
            "fps": MEAD_VIDEO_FPS,
            "sample_rate": MEAD_AUDIO_RATE,
            "image_size": image_size,
            "views": list(views),
            "view_angles": {v: list(VIEW_ANGLES[v]) for v in views},
            "motion_layout": "exp 64 | angle 3 (pitch, yaw, roll) | trans 3; front view",
            "clips": clips_meta,
        }
        arrays["__meta__"] = np.array(json.dumps(meta, sort_keys=True))
        with atomic_path(ground_truth_path(out_dir, actor), suffix=".partial") as gt_partial:
            _write_npz(gt_partial, arrays)
        final = out_dir / f"{actor}.tar"  # last: an actor's archive exists only with its ground truth
        with atomic_path(final, suffix=".partial") as partial:
            _write_tar(partial, members)
        return final
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def generate_mead(
    out_dir: Path,
    actors: list[str],
    emotions: list[str],
    levels: list[int],
    sentences_per_level: int,
    seed: int,
    *,
    image_size: int = 256,
    views: tuple[str, ...] = ("front",),
    video_split: bool = False,
    workers: int = 1,
) -> list[Path]:
    """Write one MEAD-shaped ``<actor>.tar`` per actor (plus its ground-truth sidecar); returns the tar paths.

    Each (emotion, level) gets ``sentences_per_level`` clips ``001``.. of real espeak-ng speech with a face
    rendered from ground-truth motion; neutral gets level_1 only. ``video_split`` writes ``video_1.tar`` +
    ``video_2.tar`` (emotions split in MEAD order) instead of ``video.tar``. ``workers`` > 1 renders clips
    in parallel processes; the output does not depend on it.
    """
    views = tuple(views)
    actors, emotions, levels = list(actors), list(emotions), list(levels)
    _validate(
        actors=actors,
        emotions=emotions,
        levels=levels,
        sentences_per_level=sentences_per_level,
        image_size=image_size,
        views=views,
        video_split=video_split,
    )
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pool = ProcessPoolExecutor(workers) if workers > 1 else None
    try:
        return [
            _build_actor(
                a,
                out_dir,
                emotions=emotions,
                levels=levels,
                sentences_per_level=sentences_per_level,
                seed=seed,
                image_size=image_size,
                views=views,
                video_split=video_split,
                pool=pool,
            )
            for a in actors
        ]
    finally:
        if pool is not None:
            pool.shutdown()


def timed_demo(out_dir: Path, workers: int = 1) -> float:
    """Generate the default demo set (4 actors, 8 emotions, 3 levels) and return the seconds it took."""
    t0 = time.perf_counter()
    generate_mead(
        out_dir, ["M003", "W009", "M012", "W021"], list(EMOTIONS), list(LEVELS), 1, 0, workers=workers
    )
    return time.perf_counter() - t0
