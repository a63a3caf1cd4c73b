import torch
from torch import nn
from torch.utils.data import Dataset

from emotalker.configs.schema import TrainStageConfig
from emotalker.tasks.training.checkpoint import load_checkpoint
from emotalker.tasks.training.loop import TrainingInputError, batch_for_step, run_training


class Linear(Dataset):
    """y = x @ w + noise: learnable, with dropout in the model to exercise RNG determinism."""

    def __init__(self, n: int = 64) -> None:
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.01 * torch.randn(n, generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "y": self.y[i]}


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.1), nn.ReLU(), nn.Linear(16, 1))


def _loss(model, batch, step):
    loss = ((model(batch["x"]).squeeze(-1) - batch["y"]) ** 2).mean()
    return loss, {"loss": loss.item()}


def _val(model, batches):
    errs = [((model(b["x"]).squeeze(-1) - b["y"]) ** 2).mean().item() for b in batches]
    return {"val/loss": sum(errs) / len(errs)}


STAGE = TrainStageConfig(
    steps=80, batch_size=8, lr=3e-2, warmup_steps=5, checkpoint_every=10, log_every=5, val_every=10
)


def test_loss_drops_and_best_checkpoint_is_kept(tmp_path):
    res = run_training(
        _model(),
        _loss,
        Linear(),
        stage=STAGE,
        ckpt_dir=tmp_path,
        device="cpu",
        val_set=Linear(16),
        val_fn=_val,
    )
    first = res.history["train/loss"][0][1]
    assert res.final_metrics["train/loss"] < first / 5
    assert res.steps == 80 and res.resumed_from is None
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["step"] == res.best_step and best["metric"] == res.best_metric


def test_killed_run_resumes_to_the_same_weights(tmp_path):
    def train(model: torch.nn.Module, folder: str, **kw: int):
        return run_training(
            model, _loss, Linear(), stage=STAGE, ckpt_dir=tmp_path / folder, device="cpu",
            val_set=Linear(16), val_fn=_val, **kw,
        )  # fmt: skip

    ref_model = _model()
    train(ref_model, "ref")
    partial = train(_model(), "k", stop_after=23)
    assert partial.steps == 23
    resumed_model = _model()  # a fresh process would rebuild the model from scratch
    res = train(resumed_model, "k")
    assert res.resumed_from == 20  # last checkpoint before the kill
    for a, b in zip(ref_model.state_dict().values(), resumed_model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_batches_cover_each_epoch_once_and_depend_only_on_seed_and_step():
    ds = Linear(10)
    seen = torch.cat([batch_for_step(ds, 10, 5, 3, s)["y"] for s in range(2)])
    assert sorted(seen.tolist()) == sorted(ds.y.tolist())
    torch.testing.assert_close(batch_for_step(ds, 10, 5, 3, 7)["x"], batch_for_step(ds, 10, 5, 3, 7)["x"])
    assert not torch.equal(batch_for_step(ds, 10, 5, 3, 0)["x"], batch_for_step(ds, 10, 5, 4, 0)["x"])


def test_empty_training_set_fails_before_any_step(tmp_path):
    import pytest

    with pytest.raises(TrainingInputError, match="no windows"):
        run_training(_model(), _loss, Linear(0), stage=STAGE, ckpt_dir=tmp_path, device="cpu")
    assert not (tmp_path / "last.pt").exists()


def test_thread_count_is_fixed_recorded_and_a_different_one_on_resume_is_reported(tmp_path, caplog):
    before = torch.get_num_threads()
    try:
        run_training(
            _model(), _loss, Linear(), stage=STAGE, ckpt_dir=tmp_path, device="cpu", stop_after=12, threads=1
        )
        assert torch.get_num_threads() == 1
        assert load_checkpoint(tmp_path / "last.pt")["threads"] == 1
        torch.set_num_threads(2)  # something else in a long-lived process changed it

        def resume(threads: int | None) -> str:
            caplog.clear()
            with caplog.at_level("WARNING", logger="emotalker.tasks.training.loop"):
                run_training(
                    _model(),
                    _loss,
                    Linear(),
                    stage=STAGE,
                    ckpt_dir=tmp_path,
                    device="cpu",
                    stop_after=1,
                    threads=threads,
                )
            return caplog.text

        assert "resuming with 2 CPU threads, checkpoint written with 1" in resume(None)
        assert "CPU threads" not in resume(1)
    finally:
        torch.set_num_threads(before)


def test_vqvae_stage_uses_the_paper_adamw_betas_and_warmup(tmp_path):
    from emotalker.configs.schema import PipelineConfig

    cfg = PipelineConfig().train
    assert cfg.vqvae.betas == (0.9, 0.99) and cfg.vqvae.warmup_steps == 300
    stage = cfg.vqvae.model_copy(update={"steps": 3, "batch_size": 4, "lr": 1e-2, "warmup_steps": 10})
    run_training(_model(), _loss, Linear(), stage=stage, ckpt_dir=tmp_path, device="cpu")
    opt = load_checkpoint(tmp_path / "last.pt")["optimizer"]["param_groups"][0]
    assert tuple(opt["betas"]) == (0.9, 0.99)
    assert abs(opt["lr"] - 1e-2 * 4 / 10) < 1e-12  # warming up: lr * (step + 1) / warmup, 3 steps done
    other = cfg.transformer.model_copy(update={"steps": 1, "batch_size": 4})
    run_training(_model(), _loss, Linear(), stage=other, ckpt_dir=tmp_path / "t", device="cpu")
    groups = load_checkpoint(tmp_path / "t" / "last.pt")["optimizer"]["param_groups"]
    assert tuple(groups[0]["betas"]) == (0.9, 0.999)  # stage 2: AdamW's defaults


def test_training_reports_steps_loss_and_eta_while_it_runs(tmp_path, caplog, monkeypatch):
    import logging

    from emotalker.tasks import progress

    monkeypatch.setattr(progress.sys.stderr, "isatty", lambda: False)
    monkeypatch.setattr(progress, "PLAIN_EVERY_S", 0.0)  # a line per step instead of every 10 s
    with caplog.at_level(logging.INFO, logger="emotalker.progress"):
        run_training(
            _model(),
            _loss,
            Linear(),
            stage=STAGE,
            ckpt_dir=tmp_path,
            device="cpu",
            stop_after=12,
            desc="train-toy",
        )
    lines = [r.getMessage() for r in caplog.records if r.name == "emotalker.progress"]
    assert lines[0].startswith("train-toy: 1/80 step") and "ETA" in lines[0]
    assert any(line.startswith("train-toy: 10/80 step") and "loss=" in line for line in lines)
    assert lines[-1].startswith("train-toy: 12/80 step")  # closed where the call stopped
