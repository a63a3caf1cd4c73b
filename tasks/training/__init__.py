"""Training: one module per stage (registered in ``stages.py``), the engine that runs any of them, the
resumable loop, checkpoints and MLflow tracking."""
