"""The demo's emotion HuBERT, fine-tuned for emotion the way ``superb/hubert-base-superb-er`` was.

A randomly initialised HuBERT passes none of the synthetic speech's emotion cue (pitch, rate, pauses and
loudness per emotion) to its features, so stage 2 could not learn emotion from audio in the demo (a linear
probe on its features scores chance). The real checkpoint is HuBERT fine-tuned for emotion recognition
(on IEMOCAP); the stand-in is fine-tuned likewise, on speech of the demo's training actors and of
synthetic voices that are no demo actor (never the held-out actors), and saved in the same Hugging Face
layout (``HubertForSequenceClassification``, labels = MEAD's emotions). A linear
probe from per-utterance mean features to the emotion, fitted on the training actors and scored on the
held-out (validation and test) actors, is recorded beside the weights for the stand-in before and after,
with the fine-tuned classifier's own accuracy on those actors.

The extra voices (``corpus_speakers``) matter: a held-out voice no training speaker shared read at chance.
The speech is the pipeline's (16 kHz, each speaker's clip sentences), and the head trains on 1 s windows
(``CROP_SAMPLES``).

Where the stand-in departs from speech fine-tuning, and why: the real checkpoint starts from a pretrained
HuBERT whose CNN front end is kept frozen; the stand-in starts from random weights, so its CNN is trained
too (a frozen random front end passes little of the pitch and rate cues). Its per-utterance mean features
start almost constant (between-utterance spread ~0.05 against ~0.9 within an utterance), so the new head
learns at ``HEAD_LR_SCALE`` times the body's rate, and dropout, layer drop and time masking are off
(a 32-wide model and 44 utterances: they kept the training loss at chance).
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emotalker.configs.constants import EMOTION_TO_ID, EMOTIONS, LEVELS, SAMPLE_RATE
from emotalker.tasks.demo.synthetic.mead import clip_sentences
from emotalker.tasks.demo.synthetic.speech import prosody_for, synthesize, voice_for_actor

PROBE_FILE = "emotion_probe.json"  # written beside the stand-in's weights
# 1 s training windows at 16 kHz: the head sees the mean of a second, so every second of the features has
# to carry the utterance's emotion (stage 2 reads about 0.16 s of audio per token through the alignment
# mask). Measured 2026-12-06 on the demo (seed 0, clip sentences drawn per speaker): 0.5 s windows gave a
# held-out classifier of 0.27 and stage 2 FaceL2 2.32, 1 s windows 0.52 and 2.04 (copy-the-reference 2.10)
CROP_SAMPLES = 16_000
HEAD_LR_SCALE = 30.0  # the new classifier head's learning rate over the encoder's
NO_REGULARISATION = {
    "hidden_dropout": 0.0,
    "attention_dropout": 0.0,
    "activation_dropout": 0.0,
    "feat_proj_dropout": 0.0,
    "final_dropout": 0.0,
    "layerdrop": 0.0,
    "apply_spec_augment": False,  # (not mask_time_prob=0: HuBERT then builds no masked_spec_embed weight)
}


@dataclass(frozen=True)
class Utterance:
    actor: str
    emotion: str
    wave: np.ndarray  # float32, 16 kHz
    level: int = 1


def speak(actors: list[str], seed: int) -> list[Utterance]:
    """Every emotion and level of each actor, spoken as the demo's generator speaks its clips (the same
    voice and sentence as clip 001: a sentence fixed per emotion would let the stand-in read the emotion
    from the words, which transfers to no clip; measured: 0.73 on such held-out speech, 0.41 on the
    same actor's clips), at the
    pipeline's 16 kHz (the generator writes MEAD's 48 kHz; the prepare flow resamples it to 16 kHz, the
    rate HuBERT and the mel windows read: a stand-in trained on 48 kHz samples read as 16 kHz would learn
    speech three times slower and lower than the speech it is given). Both stand-ins train on the same
    utterances, so they are synthesised once per process (espeak: ~90 calls for the demo's actors)."""
    return list(_spoken(tuple(actors), seed))


@functools.lru_cache(maxsize=4)
def _spoken(actors: tuple[str, ...], seed: int) -> tuple[Utterance, ...]:
    out = []
    for actor in actors:
        voice = voice_for_actor(actor, seed)
        for emotion in EMOTIONS:
            for level in [1] if emotion == "neutral" else LEVELS:
                text = clip_sentences(actor, emotion, level, seed)[0]  # the clip 001 the generator speaks
                wave = synthesize(text, voice, prosody_for(emotion, level), sample_rate=SAMPLE_RATE)
                out.append(Utterance(actor, emotion, wave, level))
    return tuple(out)


def corpus_speakers(per_sex: int, exclude: list[str]) -> list[str]:
    """``per_sex`` male and female synthetic speakers (ids ``M100``.., ``W100``.., never a MEAD id) that
    are not in ``exclude``: the stand-in's own emotion corpus, as superb's ER was fine-tuned on IEMOCAP's
    speakers and not MEAD's. Two demo voices alone do not carry to an unheard voice (measured: a held-out
    male actor whose espeak variant no training actor used read at chance, 0.14)."""
    ids = [f"{sex}{100 + i}" for sex in "MW" for i in range(per_sex)]
    return [a for a in ids if a not in set(exclude)]


def _crop(wave: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
    """A ``CROP_SAMPLES`` window (random when ``rng`` is given, else centred), zero-padded if shorter."""
    if len(wave) < CROP_SAMPLES:
        return np.pad(wave, (0, CROP_SAMPLES - len(wave)))
    start = (
        (len(wave) - CROP_SAMPLES) // 2 if rng is None else int(rng.integers(0, len(wave) - CROP_SAMPLES + 1))
    )
    return wave[start : start + CROP_SAMPLES]


def mean_features(model: Any, utterances: list[Utterance]) -> np.ndarray:
    """(N, hidden) per-utterance mean of the encoder's last hidden state (what the pipeline stores)."""
    feats = []
    with torch.inference_mode():
        for u in utterances:
            h = model.hubert(torch.from_numpy(u.wave)[None]).last_hidden_state[0]
            feats.append(h.mean(dim=0).numpy())
    return np.stack(feats)


def probe_accuracy(model: Any, train: list[Utterance], held_out: list[Utterance]) -> float:
    """Held-out accuracy of a linear probe from mean features to the emotion (chance: 1/8)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x_tr, x_te = mean_features(model, train), mean_features(model, held_out)
    scaler = StandardScaler().fit(x_tr)
    probe = LogisticRegression(max_iter=2000).fit(scaler.transform(x_tr), [u.emotion for u in train])
    return float(np.mean(probe.predict(scaler.transform(x_te)) == np.array([u.emotion for u in held_out])))


def _regularisation_of(config: Any) -> dict[str, float]:
    return {k: getattr(config, k) for k in NO_REGULARISATION}


def head_accuracy(model: Any, held_out: list[Utterance]) -> float:
    """Held-out accuracy of the fine-tuned classifier itself on whole utterances (chance: 1/8)."""
    with torch.inference_mode():
        pred = [int(model(input_values=torch.from_numpy(u.wave)[None]).logits.argmax()) for u in held_out]
    return float(np.mean(np.array(pred) == np.array([EMOTION_TO_ID[u.emotion] for u in held_out])))


def finetune_emotion_hubert(
    directory: str | Path,
    *,
    train_actors: list[str],
    held_out_actors: list[str],
    seed: int = 0,
    speech_seed: int | None = None,
    steps: int = 300,
    batch_size: int = 16,
    lr: float = 1e-3,
    shuffle_labels: bool = False,
) -> dict[str, Any]:
    """Fine-tune the ``HubertForSequenceClassification`` saved in ``directory`` on the training actors'
    speech (8 MEAD emotions) and save it back; returns (and writes to ``PROBE_FILE``) the probe accuracy
    on the held-out actors before and after, the classifier's own held-out accuracy, and the time taken.
    ``speech_seed`` (default ``seed``) picks the voices and sentences as the generator did for its clips.
    ``shuffle_labels`` trains on labels permuted across utterances: the negative control, whose classifier
    must stay near chance on the held-out actors."""
    from transformers import HubertForSequenceClassification

    t0 = time.perf_counter()
    out = Path(directory)
    voices = seed if speech_seed is None else speech_seed  # the demo world's ``synthetic.seed``
    train, held_out = speak(train_actors, voices), speak(held_out_actors, voices)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        base = HubertForSequenceClassification.from_pretrained(str(out), local_files_only=True)
        model = HubertForSequenceClassification.from_pretrained(
            str(out),
            local_files_only=True,
            num_labels=len(EMOTIONS),
            id2label=dict(enumerate(EMOTIONS)),
            label2id=dict(EMOTION_TO_ID),
            ignore_mismatched_sizes=True,  # the head is new: MEAD's 8 emotions
            **NO_REGULARISATION,
        )
        before = probe_accuracy(base.eval(), train, held_out)
        model.train()  # every weight, the CNN front end too (random, not pretrained: see the module doc)
        head = [p for n, p in model.named_parameters() if n.startswith(("projector.", "classifier."))]
        body = [p for n, p in model.named_parameters() if not n.startswith(("projector.", "classifier."))]
        opt = torch.optim.AdamW([{"params": body, "lr": lr}, {"params": head, "lr": lr * HEAD_LR_SCALE}])
        rng = np.random.default_rng(seed)
        labels = np.array([EMOTION_TO_ID[u.emotion] for u in train])
        if shuffle_labels:
            labels = rng.permutation(labels)
        for _ in range(steps):
            idx = rng.choice(len(train), size=min(batch_size, len(train)), replace=False)
            x = torch.from_numpy(np.stack([_crop(train[i].wave, rng) for i in idx]))
            loss = model(input_values=x, labels=torch.from_numpy(labels[idx])).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        after = probe_accuracy(model, train, held_out)
        classifier = head_accuracy(model, held_out)
    model.config.update(_regularisation_of(base.config))  # saved with the released config's settings
    model.save_pretrained(out)
    record = {
        "probe_accuracy_held_out": {"before_finetuning": before, "after_finetuning": after},
        "classifier_accuracy_held_out": classifier,
        "chance": 1 / len(EMOTIONS),
        "train_actors": train_actors,
        "held_out_actors": held_out_actors,
        "utterances": {"train": len(train), "held_out": len(held_out)},
        "steps": steps,
        "shuffled_labels": shuffle_labels,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    (out / PROBE_FILE).write_text(json.dumps(record, indent=2))
    return record
