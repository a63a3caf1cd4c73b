"""The demo world's files: the synthetic MEAD archives and randomly initialised stand-ins for every model
asset, written in the real formats where the demo config points (``flows/demo.py`` runs these as tasks).

Real Deep3DFace / face-alignment / HuBERT / SadTalker / SyncNet / ESR-9 weights cannot be fetched in
this environment; files this did not write (real checkpoints) are never overwritten.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from emotalker.configs.constants import RENDERER_STANDIN_MARKER
from emotalker.configs.schema import PipelineConfig
from emotalker.tasks.demo.synthetic.mead import GENERATOR_VERSION, generate_mead

log = logging.getLogger(__name__)
RENDERER_MARKER = RENDERER_STANDIN_MARKER
EMOTION_STANDIN_MARKER = ".emotalker-standin.json"  # the emotion stand-in's settings, beside it
STANDIN_KEYS = {
    "emotion_model_steps",
    "emotion_model_speakers",
    "audio2exp_steps",
}  # train stand-ins; the synthetic data ignores them


def actor_split(cfg: PipelineConfig) -> tuple[list[str], list[str]]:
    """The synthetic actors the stand-ins may train on, and the held-out (validation, test) ones."""
    held_out = [a for a in cfg.synthetic.actors if a in {*cfg.data.test_actors, *cfg.data.val_actors}]
    return [a for a in cfg.synthetic.actors if a not in held_out], held_out


def _marker_ok(path: Path, payload: dict[str, Any]) -> bool:
    return path.exists() and json.loads(path.read_text()) == payload


def synthetic_mead(cfg: PipelineConfig, mirror: Path) -> list[str]:
    """The synthetic MEAD archives in ``mirror`` (rewritten only when the synthetic settings change)."""
    s = cfg.synthetic
    payload = {
        "synthetic": s.model_dump(mode="json", exclude=STANDIN_KEYS),
        "views": cfg.data.views,
        "generator": GENERATOR_VERSION,
    }
    marker = mirror / ".synthetic.json"
    if _marker_ok(marker, payload):
        return sorted(str(p) for p in mirror.glob("*.tar"))
    tars = generate_mead(
        mirror,
        actors=s.actors,
        emotions=s.emotions,
        levels=s.levels,
        sentences_per_level=s.sentences_per_level,
        seed=s.seed,
        image_size=s.image_size,
        views=tuple(cfg.data.views),
        video_split=s.video_split,
        workers=s.workers,
    )
    marker.write_text(json.dumps(payload))
    return [str(p) for p in tars]


def stand_in_assets(cfg: PipelineConfig) -> dict[str, str]:
    """Tiny HuBERTs (the emotion one fine-tuned for emotion), Deep3DFace/face-alignment, renderer and
    evaluation stand-ins in the real formats where the config points (skipped when present)."""
    from emotalker.tasks.demo.standins.fake_hubert import write_tiny_hubert

    # As with the real pair (superb ER converted from hubert-base-ls960), the emotion checkpoint is the
    # content encoder plus a classifier head, so both families come from one forward pass.
    content, emotion = Path(cfg.audio.content_model), Path(cfg.audio.emotion_model)
    if not (content / "config.json").exists():
        write_tiny_hubert(
            content,
            hidden_size=cfg.transformer.audio_dim,
            num_hidden_layers=max(10, cfg.audio.content_layer + 1),
            seed=cfg.seed,
        )
    emotion_standin(cfg)
    out: dict[str, str] = {"emotion": str(emotion), "content": str(content)}
    if not Path(cfg.face.deep3dface_checkpoint).exists():  # generation needs them even without extraction
        from emotalker.tasks.demo.standins.fake_face_assets import write_fake_face_assets

        fa_dir = Path(cfg.face.face_alignment_dir or "data/demo/assets/torch_home/hub/checkpoints")
        torch_home = fa_dir.parent.parent
        written = write_fake_face_assets(
            Path(cfg.face.deep3dface_checkpoint).parent, torch_home, seed=cfg.seed
        )
        out.update({k: str(v) for k, v in written.items()})
    out.update(renderer_standins(cfg))
    pretrained_audio2exp(cfg)
    out.update(eval_standins(cfg))
    return out


def emotion_standin(cfg: PipelineConfig) -> dict[str, Any] | None:
    """The emotion HuBERT stand-in: the content stand-in plus a classifier head, fine-tuned for emotion on
    the training actors and ``synthetic.emotion_model_speakers`` corpus voices (as superb's ER was on
    IEMOCAP). Rebuilt from the content model and re-tuned whenever its settings change (a marker records
    them); a checkpoint this did not write (no marker or record: a real one) is never touched. Returns the
    fine-tuning record when it tuned now."""
    from emotalker.tasks.demo.standins.emotion_hubert import (
        PROBE_FILE,
        corpus_speakers,
        finetune_emotion_hubert,
    )
    from emotalker.tasks.demo.standins.fake_hubert import write_er_from_base

    content, emotion = Path(cfg.audio.content_model), Path(cfg.audio.emotion_model)
    train, held_out = actor_split(cfg)
    steps = cfg.synthetic.emotion_model_steps
    if steps and not (train and held_out):
        log.warning(
            "emotion HuBERT stand-in left random: fine-tuning needs training and held-out actors "
            "(synthetic.actors %s, data.test_actors / data.val_actors)",
            cfg.synthetic.actors,
        )
    tuning = None
    if steps and train and held_out:
        corpus = corpus_speakers(cfg.synthetic.emotion_model_speakers, exclude=cfg.synthetic.actors)
        tuning = {"steps": steps, "train_actors": train + corpus, "held_out_actors": held_out}
    payload = {
        "seed": cfg.seed,
        "speech_seed": cfg.synthetic.seed,
        "generator": GENERATOR_VERSION,
        "content_config": hashlib.sha256((content / "config.json").read_bytes()).hexdigest(),
        "fine_tuning": tuning,
    }
    marker = emotion / EMOTION_STANDIN_MARKER
    ours = not (emotion / "config.json").exists() or marker.exists() or (emotion / PROBE_FILE).exists()
    if not ours or _marker_ok(marker, payload):
        return None
    write_er_from_base(content, emotion, seed=cfg.seed + 1)
    (emotion / PROBE_FILE).unlink(missing_ok=True)
    record = None
    if tuning is not None:
        record = finetune_emotion_hubert(emotion, seed=cfg.seed, speech_seed=cfg.synthetic.seed, **tuning)
        acc = record["probe_accuracy_held_out"]
        log.info(
            "emotion HuBERT stand-in fine-tuned in %.0f s: on held-out actors its classifier %.2f, a probe "
            "on its features %.2f (before %.2f; chance %.3f)",
            record["seconds"],
            record["classifier_accuracy_held_out"],
            acc["after_finetuning"],
            acc["before_finetuning"],
            record["chance"],
        )
    marker.write_text(json.dumps(payload))
    return record


def eval_standins(cfg: PipelineConfig) -> dict[str, str]:
    """Random BFM, SyncNet and ESR-9 (and the optional Hugging Face expression classifier) where the demo
    config points (skipped when present), so the demo's evaluation computes every Table 1 metric."""
    from emotalker.models.esr9 import esr9_files
    from emotalker.tasks.demo.standins.fake_bfm import write_fake_bfm
    from emotalker.tasks.demo.standins.fake_eval_assets import (
        write_fake_esr9,
        write_fake_expression_classifier,
        write_fake_syncnet,
    )

    out: dict[str, str] = {}
    if cfg.face.bfm_path is not None:
        if not cfg.face.bfm_path.exists():
            write_fake_bfm(cfg.face.bfm_path, seed=cfg.seed)
        out["bfm"] = str(cfg.face.bfm_path)
    e = cfg.eval
    if e.syncnet_checkpoint is not None:
        if not e.syncnet_checkpoint.exists():
            write_fake_syncnet(e.syncnet_checkpoint, seed=cfg.seed)
        out["syncnet"] = str(e.syncnet_checkpoint)
    if e.esr9_dir is not None:
        if not all((e.esr9_dir / f).exists() for f in esr9_files()):
            write_fake_esr9(e.esr9_dir, seed=cfg.seed)
        out["esr9"] = str(e.esr9_dir)
    if e.emotion_classifier_checkpoint is not None:
        if not (e.emotion_classifier_checkpoint / "config.json").exists():
            write_fake_expression_classifier(e.emotion_classifier_checkpoint, seed=cfg.seed)
        out["expression_classifier"] = str(e.emotion_classifier_checkpoint)
    return out


def renderer_standins(cfg: PipelineConfig) -> dict[str, str]:
    """SadTalker renderer stand-ins at ``render.widths`` where the render keys point.

    Stand-ins this wrote are rewritten when the widths change (the files must fit the configured network);
    files it did not write (no marker: real checkpoints) are never touched.
    """
    from emotalker.tasks.demo.standins.audio2exp import AUDIO2EXP_RECORD
    from emotalker.tasks.demo.standins.fake_renderer import write_renderer_standins

    rc = cfg.render
    folder = Path(rc.checkpoint).parent
    # "sadtalker": the safetensors holds real-layout ExpNet and PoseVAE stand-ins (older demo data: rewritten)
    payload = {
        "widths": rc.widths.model_dump(),
        "seed": cfg.seed,
        "sadtalker": "audio2exp+audio2pose",
        "audio2exp_steps": cfg.synthetic.audio2exp_steps,  # a change rewrites it random, then retrains it
        "speech_seed": cfg.synthetic.seed,  # the speech it trains on: the voices, sentences
        "audio2exp_actors": list(actor_split(cfg)),  # and speakers (training, held out)
        "generator": GENERATOR_VERSION,
    }
    marker = folder / RENDERER_MARKER
    wanted = [rc.checkpoint, rc.mapping_checkpoint, rc.mapping_full_checkpoint]
    if all(Path(p).exists() for p in wanted) and (not marker.exists() or _marker_ok(marker, payload)):
        return {}
    written = write_renderer_standins(folder, rc.widths, seed=cfg.seed, he_widths=(8, 64))
    (folder / AUDIO2EXP_RECORD).unlink(missing_ok=True)  # the audio2exp in the new file is random again
    targets = {"safetensors": rc.checkpoint, "mapping": rc.mapping_checkpoint}
    targets["mapping_full"] = rc.mapping_full_checkpoint
    for key, target in targets.items():  # the config may name the files differently
        if written[key] != Path(target):
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            written[key] = written[key].replace(target)
    marker.write_text(json.dumps(payload))
    return {f"renderer_{k}": str(v) for k, v in written.items()}


def pretrained_audio2exp(cfg: PipelineConfig) -> dict[str, Any] | None:
    """Train the audio2exp stand-in of the renderer's safetensors (which the lip branch starts from) on the
    training actors' speech, once per written stand-in; real checkpoints (no stand-in marker) are never
    touched. Returns the record when it trained now."""
    from emotalker.tasks.demo.standins.audio2exp import AUDIO2EXP_RECORD, pretrain_audio2exp

    steps, path = cfg.synthetic.audio2exp_steps, Path(cfg.render.checkpoint)
    train, held_out = actor_split(cfg)
    if not steps or not (path.parent / RENDERER_MARKER).exists():
        return None
    if (path.parent / AUDIO2EXP_RECORD).exists():
        return None
    if not (train and held_out):
        log.warning("audio2exp stand-in left random: training needs training and held-out actors")
        return None
    record = pretrain_audio2exp(
        path,
        train_actors=train,
        held_out_actors=held_out,
        seed=cfg.seed,
        speech_seed=cfg.synthetic.seed,
        steps=steps,
    )
    l2 = record["held_out_lip_l2"]
    log.info(
        "SadTalker audio2exp stand-in trained in %.0f s: held-out lip L2 %.3f "
        "(random %.3f, training mean %.3f)",
        record["seconds"],
        l2["after"],
        l2["before"],
        l2["training_mean"],
    )
    return record
