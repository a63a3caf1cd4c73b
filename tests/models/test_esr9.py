import pytest
import torch

from emotalker.models.esr9 import (
    BASE_FILE,
    ESR9,
    ConvolutionalBranch,
    esr9_files,
    load_esr9,
)
from emotalker.models.weights import CheckpointError
from emotalker_testkit.esr9 import write_random_esr9


def test_released_layout_names_and_shapes():
    assert esr9_files() == ["Net-Base-Shared_Representations.pt"] + [
        f"Net-Branch_{i}.pt" for i in range(1, 10)
    ]
    model = ESR9()
    base = model.base.state_dict()
    branch = model.convolutional_branches[0].state_dict()
    assert tuple(base["conv1.weight"].shape) == (64, 3, 5, 5)
    assert tuple(base["bn4.running_var"].shape) == (128,)
    assert tuple(branch["conv4.weight"].shape) == (512, 256, 3, 3)
    assert tuple(branch["fc.weight"].shape) == (8, 512)
    assert tuple(branch["fc_dimensional.weight"].shape) == (2, 8)
    assert len(base) == 4 * 2 + 4 * 5 and len(branch) == 4 * 2 + 4 * 5 + 2 * 2  # convs, BN (5 each), fcs
    emotion, affect = model.eval()(torch.rand(2, 3, 96, 96))
    assert emotion.shape == (2, 9, 8) and affect.shape == (2, 9, 2)


def test_loads_the_ten_files_strictly_and_exactly(tmp_path):
    states = write_random_esr9(tmp_path / "esr9")
    model = load_esr9(tmp_path / "esr9")
    assert not model.training and not any(b.training for b in model.convolutional_branches)
    for part, name in zip([model.base, *model.convolutional_branches], esr9_files(), strict=True):
        for key, value in part.state_dict().items():
            assert torch.equal(value, states[name][key]), (name, key)


def _one_line_error(exc_info) -> str:
    message = str(exc_info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("edit", "name", "key", "error"),
    [
        ("extra", "Net-Branch_3.pt", "fc.extra_weight", CheckpointError),
        ("drop", "Net-Branch_1.pt", "bn2.running_var", CheckpointError),
        ("shape", BASE_FILE, "conv1.weight", CheckpointError),
        ("shape", "Net-Branch_9.pt", "fc.weight", CheckpointError),
    ],
)
def test_a_file_that_does_not_fit_fails_in_one_line_naming_file_and_key(tmp_path, edit, name, key, error):
    states = write_random_esr9(tmp_path)
    state = dict(states[name])
    if edit == "extra":
        state[key] = torch.zeros(3)
    elif edit == "drop":
        del state[key]
    else:
        state[key] = torch.zeros(*state[key].shape[:-1], state[key].shape[-1] + 1)
    torch.save(state, tmp_path / name)
    with pytest.raises(error) as exc_info:
        load_esr9(tmp_path)
    message = _one_line_error(exc_info)
    assert name in message and key in message


def test_a_missing_or_unreadable_file_fails_in_one_line_naming_it(tmp_path):
    write_random_esr9(tmp_path)
    (tmp_path / "Net-Branch_7.pt").unlink()
    with pytest.raises(FileNotFoundError) as exc_info:
        load_esr9(tmp_path)
    assert "Net-Branch_7.pt" in _one_line_error(exc_info)
    torch.save([1, 2, 3], tmp_path / "Net-Branch_7.pt")
    with pytest.raises(CheckpointError) as exc_info:
        load_esr9(tmp_path)
    assert "Net-Branch_7.pt" in _one_line_error(exc_info)
    (tmp_path / "Net-Branch_7.pt").write_bytes(b"not a checkpoint\n\nat all")
    with pytest.raises(CheckpointError) as exc_info:
        load_esr9(tmp_path)
    assert "Net-Branch_7.pt" in _one_line_error(exc_info)


def test_files_without_num_batches_tracked_still_load(tmp_path):
    """Pre-0.4.1 PyTorch saved BatchNorm without that buffer; torch's own loader fills it, so do we."""
    states = write_random_esr9(tmp_path)
    for name, state in states.items():
        torch.save({k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}, tmp_path / name)
    model = load_esr9(tmp_path)
    assert torch.equal(model.base.bn1.running_mean, states[BASE_FILE]["bn1.running_mean"])


def test_branch_batch_stats_is_a_train_mode_batchnorm_on_one_image_and_leaves_buffers_alone(tmp_path):
    write_random_esr9(tmp_path)
    model = load_esr9(tmp_path)
    branch = model.convolutional_branches[4]
    before = {k: v.clone() for k, v in branch.state_dict().items()}
    shared = torch.rand(3, 128, 20, 20)
    with torch.no_grad():
        ours = branch(shared, per_image_stats=True)[0]
        assert all(torch.equal(v, before[k]) for k, v in branch.state_dict().items())
        upstream = ConvolutionalBranch()
        upstream.load_state_dict(before)
        upstream.train()  # what upstream's never-evaluated branches do, one image per forward
        one_by_one = torch.cat([upstream(shared[i : i + 1])[0] for i in range(3)])
        running = branch(shared, per_image_stats=False)[0]  # eval mode: running statistics
    torch.testing.assert_close(ours, one_by_one, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(ours, running, rtol=1e-2, atol=1e-3)
