"""Process set-up for every run (CLI, Prefect worker, tests): environment defaults, the project's loggers,
and the one list of known-harmless third-party warnings that are filtered, each with its reason.

``env_defaults`` must run before Prefect is imported (Prefect reads its logging settings then); the CLI
calls it first thing and ``prefect.yaml`` sets the same variables for deployments. ``configure`` is
idempotent and runs when ``emotalker.flows.common`` is imported, i.e. in every process that runs a flow.
"""

from __future__ import annotations

import logging
import os
import re
import warnings

# (environment variable, value, why); the user's environment always wins
ENV_DEFAULTS: tuple[tuple[str, str, str], ...] = (
    ("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180", "a server starting on a busy machine"),
    ("PREFECT_SERVER_ANALYTICS_ENABLED", "false", "no telemetry from a pipeline that usually runs offline"),
    ("PREFECT_LOGGING_EXTRA_LOGGERS", "emotalker", "the project's loggers reach the Prefect UI"),
    (
        "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW",
        "ignore",
        "project log lines outside a flow run (e.g. `emotalker hubert-check`) are not an error",
    ),
    (
        "DASK_LOGGING__DISTRIBUTED",
        "warning",
        "Dask's scheduler/nanny INFO lines for every feature flow drown the pipeline's progress",
    ),
    ("MLFLOW_DISABLE_TELEMETRY", "true", "no telemetry"),
    (
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR",
        "false",
        "a bar per registry download of a few small files (model configs, plots) clutters the run's log",
    ),
    ("GIT_PYTHON_REFRESH", "quiet", "MLflow probes git; a checkout without git is fine"),
)

# (logger, message regex, why it is harmless here)
HARMLESS_LOG_RECORDS: tuple[tuple[str, str, str], ...] = (
    (
        "mlflow.pytorch",
        r"Saving pytorch model by Pickle or CloudPickle",
        "the pickle model is registered on purpose (reloads for any batch size); the pipeline itself "
        "reloads the safetensors weights logged beside it, never the pickle",
    ),
    (
        "mlflow.utils.requirements_utils",
        r"contains a local version label",
        "torch==2.13.0+cpu: MLflow logs the requirement as torch==2.13.0, which is what pyproject pins",
    ),
    (
        "mlflow.models.model",
        r"Model logged without a signature and input example",
        "the models take variable-length windows; the registry holds model_config.json beside them",
    ),
    (
        "distributed.nanny",
        r"Worker process still alive after .* seconds, killing",
        "the local Dask cluster is closing after the work is done; torch threads make workers slow to exit",
    ),
)

# (warning category, message regex, why)
HARMLESS_WARNINGS: tuple[tuple[type[Warning], str, str], ...] = (
    (
        UserWarning,
        r".*Distutils was imported before Setuptools.*",
        "import-order notice from setuptools in the MLflow environment probe",
    ),
    (
        UserWarning,
        r"The specified dataset source can be interpreted in multiple ways",
        "MLflow registers its local-file dataset source class twice; both readings of the manifest and "
        "split paths are the same local file",
    ),
    (
        UserWarning,
        r"Port \d+ is already in use",
        "the local Dask scheduler's loopback HTTP endpoint (health, metrics; no dashboard) moves to a free "
        "port when another Dask cluster on the machine holds 8787",
    ),
    (
        UserWarning,
        r"Hint: Inferred schema contains integer column",
        "the dataset inputs' schema is informational (manifest and split columns never hold missing values); "
        "no model is served with it",
    ),
)

# third-party loggers whose INFO lines drown the pipeline's progress (their warnings still show)
QUIET_LOGGERS: tuple[tuple[str, str], ...] = (
    ("distributed", "as DASK_LOGGING__DISTRIBUTED above, when Dask was imported before configure()"),
    ("mlflow.store.db.utils", "database table creation notices on first use"),
    ("mlflow.system_metrics.system_metrics_monitor", "'started/stopped monitoring' per run"),
)

PROJECT_LOGGER = "emotalker"


class _DropHarmless(logging.Filter):
    def __init__(self, patterns: list[re.Pattern[str]]) -> None:
        super().__init__()
        self.patterns = patterns

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(p.search(message) for p in self.patterns)


def env_defaults() -> None:
    """Set :data:`ENV_DEFAULTS` where the environment does not already decide."""
    for key, value, _why in ENV_DEFAULTS:
        os.environ.setdefault(key, value)


_configured = False


def configure() -> None:
    """Project loggers at INFO (progress lines), harmless third-party records and warnings filtered."""
    global _configured
    if _configured:
        return
    _configured = True
    env_defaults()  # too late for this process's Prefect settings, but inherited by its subprocesses
    project = logging.getLogger(PROJECT_LOGGER)
    if project.level == logging.NOTSET:
        project.setLevel(logging.INFO)
    by_logger: dict[str, list[re.Pattern[str]]] = {}
    for name, pattern, _why in HARMLESS_LOG_RECORDS:
        by_logger.setdefault(name, []).append(re.compile(pattern))
    for name, patterns in by_logger.items():
        logging.getLogger(name).addFilter(_DropHarmless(patterns))
    for name, _why in QUIET_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level < logging.WARNING:
            logger.setLevel(logging.WARNING)
    for category, pattern, _why in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern, category=category)
