"""A deterministic, resumable training loop shared by the three stages.

Determinism after a kill: batch order is a pure function of ``(seed, epoch)``, and the torch RNG is
re-seeded from ``(seed, step)`` before every step, so resuming at step ``s`` replays exactly what an
uninterrupted run does from ``s``. Checkpoints are written atomically every ``checkpoint_every`` steps.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, default_collate

from emotalker.configs.schema import TrainStageConfig
from emotalker.tasks.progress import progress_bar
from emotalker.tasks.training.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state

log = logging.getLogger(__name__)

LossFn = Callable[[nn.Module, dict[str, Any], int], tuple[torch.Tensor, dict[str, float]]]
ValFn = Callable[[nn.Module, Iterator[dict[str, Any]]], dict[str, float]]
MetricSink = Callable[[dict[str, float], int], None]


class TrainingInputError(ValueError):
    """Inputs that cannot train (empty data, shapes that do not match the config): raised before step 0."""


@dataclass
class TrainResult:
    steps: int
    final_metrics: dict[str, float]
    best_metric: float
    best_step: int
    resumed_from: int | None
    history: dict[str, list[tuple[int, float]]] = field(default_factory=dict)


def _to_device(batch: dict[str, Any], device: str) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


@functools.lru_cache(maxsize=4)
def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The permutation used in ``epoch``: a function of (seed, epoch) only."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def batch_for_step(dataset: Dataset, n: int, batch_size: int, seed: int, step: int) -> dict[str, Any]:
    """Batch ``step`` of the endless epoch sequence (batches wrap across epoch boundaries)."""
    start = step * batch_size
    idx = []
    for pos in range(start, start + batch_size):
        epoch, offset = divmod(pos, n)
        idx.append(int(epoch_order(n, seed, epoch)[offset]))
    return default_collate([dataset[i] for i in idx])


def iterate_batches(dataset: Dataset, batch_size: int) -> Iterator[dict[str, Any]]:
    """Every item once, in order (validation)."""
    for i in range(0, len(dataset), batch_size):
        yield default_collate([dataset[j] for j in range(i, min(i + batch_size, len(dataset)))])


def warmup_lambda(warmup: int) -> Callable[[int], float]:
    """Linear warm-up then constant, as the official schedule."""
    return lambda step: min(1.0, (step + 1) / max(1, warmup))


def run_training(
    model: nn.Module,
    loss_fn: LossFn,
    train_set: Dataset,
    *,
    stage: TrainStageConfig,
    ckpt_dir: Path,
    device: str,
    val_set: Dataset | None = None,
    val_fn: ValFn | None = None,
    val_key: str = "val/loss",
    sink: MetricSink | None = None,
    on_checkpoint: Callable[[int], None] | None = None,
    stop_after: int | None = None,
    threads: int | None = None,
    desc: str = "train",
) -> TrainResult:
    """Train for ``stage.steps`` steps, resuming from ``ckpt_dir/last.pt`` when it exists.

    ``stop_after`` ends early after that many steps of this call (used by tests to simulate a kill).
    ``threads`` fixes torch's CPU thread count: results are bit-identical only at the same count, and
    other libraries in a long-lived process may have changed it. ``desc`` labels the progress bar (steps,
    latest loss, ETA).
    """
    n = len(train_set)  # type: ignore[arg-type]
    if threads is not None:
        torch.set_num_threads(threads)
    if n == 0:
        raise TrainingInputError("the training split yields no windows: check the split and the window size")
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=stage.lr, betas=stage.betas, weight_decay=stage.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_lambda(stage.warmup_steps))
    last, best_path = ckpt_dir / "last.pt", ckpt_dir / "best.pt"
    step, best, best_step, resumed = 0, math.inf, -1, None
    history: dict[str, list[tuple[int, float]]] = {}
    if last.exists():
        state = load_checkpoint(last, device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        step, best, best_step = int(state["step"]), float(state["best"]), int(state["best_step"])
        if state.get("threads", torch.get_num_threads()) != torch.get_num_threads():
            log.warning(
                "resuming with %d CPU threads, checkpoint written with %d: results will differ slightly "
                "from an uninterrupted run (set train.cpu_threads)",
                torch.get_num_threads(),
                state["threads"],
            )
        history = json.loads(state["history"])
        resumed = step

    def emit(metrics: dict[str, float], at: int) -> None:
        for k, v in metrics.items():
            history.setdefault(k, []).append((at, float(v)))
        if sink is not None:
            sink(metrics, at)

    def validate(at: int) -> float | None:
        nonlocal best, best_step
        if val_set is None or val_fn is None or len(val_set) == 0:  # type: ignore[arg-type]
            return None
        model.eval()
        with torch.inference_mode():
            metrics = val_fn(
                model, (_to_device(b, device) for b in iterate_batches(val_set, stage.batch_size))
            )
        model.train()
        emit(metrics, at)
        value = metrics[val_key]
        if value < best:
            best, best_step = value, at
            save_checkpoint(best_path, {"model": model.state_dict(), "step": at, "metric": value})
        return value

    model.train()
    ran = 0
    bar = progress_bar(stage.steps - step, desc, unit="step")
    window_t0, window_steps = time.perf_counter(), 0
    metrics: dict[str, float] = {}
    while step < stage.steps:
        if stop_after is not None and ran >= stop_after:
            break
        torch.manual_seed(stage.seed * 1_000_003 + step)
        batch = _to_device(batch_for_step(train_set, n, stage.batch_size, stage.seed, step), device)
        loss, metrics = loss_fn(model, batch, step)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss at step {step}: {metrics}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        step += 1
        ran += 1
        window_steps += 1
        bar.update(1)
        if step % stage.log_every == 0 or step == stage.steps:
            elapsed = time.perf_counter() - window_t0
            extra = {
                "lr": scheduler.get_last_lr()[0],
                "epoch": step * stage.batch_size / n,
                "steps_per_s": window_steps / max(elapsed, 1e-9),
            }
            emit({f"train/{k}": v for k, v in metrics.items()} | extra, step)
            bar.set_postfix(loss=f"{loss.item():.4g}")
            window_t0, window_steps = time.perf_counter(), 0
        if step % stage.val_every == 0 or step == stage.steps:
            validate(step)
        if step % stage.checkpoint_every == 0 or step == stage.steps:
            save_checkpoint(
                last,
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "rng": rng_state(),
                    "step": step,
                    "best": best,
                    "best_step": best_step,
                    "history": json.dumps(history),
                    "threads": torch.get_num_threads(),
                },
            )
            if on_checkpoint is not None:
                on_checkpoint(step)
    bar.close()
    final = {k: v[-1][1] for k, v in history.items()}
    if best_step < 0 and step >= stage.steps:
        # no validation data: the last model is the best one we have
        save_checkpoint(best_path, {"model": model.state_dict(), "step": step, "metric": math.nan})
        best_step = step
    return TrainResult(step, final, best, best_step, resumed, history)
