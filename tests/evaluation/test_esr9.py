"""ESR-9 EmoAcc against an independent functional reference of upstream's inference (random weights).

The reference follows upstream's code path step by step, with torch.nn.functional ops on the saved state
dicts: cv2's BGR frame, cv2.resize to 96x96 on uint8, PIL + /255 (ToTensor; Normalize(0, 1) is a no-op),
the base with its running BatchNorm statistics (it is the only module ``ESR.eval()`` reaches), each branch
with train-mode (batch-statistics) BatchNorm on a batch of one image, the plurality vote by ``np.argmax``.
"""

import cv2
import numpy as np
import pytest
import skimage.data
import torch
import torch.nn.functional as F
from PIL import Image

from emotalker.configs.constants import EMOTIONS
from emotalker.models.esr9 import AFFECTNET_CLASSES, ESR9, esr9_files, load_esr9
from emotalker.tasks.evaluation.esr9 import (
    AFFECTNET_TO_MEAD,
    ESR9EmotionClassifier,
    load_esr9_classifier,
    majority_vote,
)
from emotalker_testkit.esr9 import write_random_esr9

UPSTREAM_CLASSES = ["Neutral", "Happy", "Sad", "Surprise", "Fear", "Disgust", "Anger", "Contempt"]


def _faces() -> np.ndarray:
    """(2, 160, 150, 3) RGB uint8: the astronaut's face and a shifted crop of it."""
    image = skimage.data.astronaut()
    return np.stack([image[30:190, 155:305], image[40:200, 145:295]])


def _bn(x, state, name, batch_stats):
    if batch_stats:  # train-mode BatchNorm, running statistics neither used nor needed
        return F.batch_norm(x, None, None, state[f"{name}.weight"], state[f"{name}.bias"], training=True)
    return F.batch_norm(
        x, state[f"{name}.running_mean"], state[f"{name}.running_var"], state[f"{name}.weight"],
        state[f"{name}.bias"], training=False,
    )  # fmt: skip


def _conv(x, state, name, padding=0):
    return F.conv2d(x, state[f"{name}.weight"], state[f"{name}.bias"], stride=1, padding=padding)


def _reference(face_rgb, states, *, branches_eval=False, feed_rgb=False):
    """Upstream's ESR-9 on one face (what cvision.recognize_facial_expression does after detection):
    returns ((9, 8) branch logits, vote label index)."""
    bgr = face_rgb if feed_rgb else cv2.cvtColor(face_rgb, cv2.COLOR_RGB2BGR)
    resized = cv2.resize(bgr, (96, 96))
    x = torch.from_numpy(np.asarray(Image.fromarray(resized), dtype=np.float32) / 255.0)
    x = x.permute(2, 0, 1).unsqueeze(0)
    base, *branches = states
    with torch.no_grad():
        h = F.relu(_bn(_conv(x, base, "conv1"), base, "bn1", False))
        h = F.max_pool2d(F.relu(_bn(_conv(h, base, "conv2"), base, "bn2", False)), 2, 2)
        h = F.relu(_bn(_conv(h, base, "conv3"), base, "bn3", False))
        shared = F.max_pool2d(F.relu(_bn(_conv(h, base, "conv4"), base, "bn4", False)), 2, 2)
        logits = []
        for b in branches:
            batch = not branches_eval
            y = F.relu(_bn(_conv(shared, b, "conv1"), b, "bn1", batch))
            y = F.max_pool2d(F.relu(_bn(_conv(y, b, "conv2"), b, "bn2", batch)), 2, 2)
            y = F.relu(_bn(_conv(y, b, "conv3"), b, "bn3", batch))
            y = F.relu(_bn(_conv(y, b, "conv4", padding=1), b, "bn4", batch))
            y = F.adaptive_avg_pool2d(y, 1).view(-1, 512)
            logits.append(F.linear(y, b["fc.weight"], b["fc.bias"])[0])
    logits = torch.stack(logits)
    votes = np.zeros(8)
    for e in logits.numpy():
        votes[np.argmax(e)] += 1
    return logits, int(np.argmax(votes))


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("esr9")
    states = write_random_esr9(folder, seed=3)
    return folder, [states[name] for name in esr9_files()]


def test_class_order_and_mapping_cover_the_eight_mead_emotions():
    assert list(AFFECTNET_CLASSES) == UPSTREAM_CLASSES
    assert sorted(AFFECTNET_TO_MEAD.values()) == sorted(EMOTIONS)
    clf = ESR9EmotionClassifier(ESR9())
    assert clf.missing == [] and clf.every == 5
    assert [clf.label_map[i] for i in range(8)] == [
        "neutral", "happy", "sad", "surprised", "fear", "disgusted", "angry", "contempt",
    ]  # fmt: skip


def test_matches_upstream_inference_on_a_real_face(weights):
    folder, states = weights
    clf = load_esr9_classifier(folder)
    faces = _faces()
    ours = clf.branch_logits(faces)
    assert ours.shape == (2, 9, 8)
    refs = [_reference(f, states) for f in faces]
    for i, (logits, _) in enumerate(refs):
        torch.testing.assert_close(ours[i], logits, rtol=1e-4, atol=1e-4)
    assert clf.affectnet_labels(faces).tolist() == [label for _, label in refs]
    assert clf.frame_labels(faces) == [AFFECTNET_TO_MEAD[UPSTREAM_CLASSES[label]] for _, label in refs]
    # batching frames changes nothing: upstream classifies one face per forward
    clf.batch_size = 1
    torch.testing.assert_close(clf.branch_logits(faces), ours, rtol=1e-5, atol=1e-5)


def test_the_parity_check_would_catch_eval_mode_branches_or_rgb_input(weights):
    folder, states = weights
    face = _faces()[:1]
    ours = load_esr9_classifier(folder).branch_logits(face)[0]
    eval_branches, _ = _reference(face[0], states, branches_eval=True)
    rgb_fed, _ = _reference(face[0], states, feed_rgb=True)
    assert not torch.allclose(ours, eval_branches, rtol=1e-2, atol=1e-3)
    assert not torch.allclose(ours, rgb_fed, rtol=1e-2, atol=1e-3)
    # and the model with eval-mode branches is what the eval reference computes
    model = load_esr9(folder, branch_batch_stats=False)
    torch.testing.assert_close(
        ESR9EmotionClassifier(model).branch_logits(face)[0], eval_branches, rtol=1e-4, atol=1e-4
    )


def test_vote_ties_go_to_the_lowest_affectnet_index():
    assert majority_vote(np.array([[3, 3, 5, 5, 1, 2, 4, 6, 7]])).tolist() == [3]
    assert majority_vote(np.array([[7, 7, 7, 0, 0, 0, 1, 1, 1], [6, 6, 6, 6, 6, 0, 0, 0, 0]])).tolist() == [
        0,
        6,
    ]


def test_classifier_tie_picks_sad_over_angry(weights):
    """Two branches say Anger (AffectNet 6), two say Sad (2): upstream's vote gives Sad, although MEAD's own
    order would put angry first."""
    folder, _ = weights
    clf = load_esr9_classifier(folder)
    with torch.no_grad():
        for branch, cls in zip(clf.model.convolutional_branches, [6, 6, 2, 2, 7, 5, 4, 3, 1], strict=True):
            branch.fc.weight.zero_()
            branch.fc.bias.copy_(F.one_hot(torch.tensor(cls), 8).float())
    assert clf.frame_labels(_faces()[:2]) == ["sad", "sad"]


def test_rejects_frames_that_are_not_rgb_uint8(weights):
    clf = load_esr9_classifier(weights[0])
    with pytest.raises(ValueError, match="uint8"):
        clf.frame_labels(np.zeros((2, 64, 64, 3), np.float32))
    with pytest.raises(ValueError, match="no frames"):
        clf.frame_labels(np.zeros((0, 64, 64, 3), np.uint8))
