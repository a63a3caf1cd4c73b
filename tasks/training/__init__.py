"""Training stage: the resumable loop, per-stage datasets and losses, checkpoints, MLflow tracking."""
