"""What every flow does first: resolve its config and make the run's inputs visible in Prefect."""

from __future__ import annotations

from typing import Annotated, Any

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from pydantic import Field

from emotalker.configs.schema import PipelineConfig, load_config
from emotalker.configs.secrets import credential_free_schema, redact_secrets
from emotalker.flows import runtime

runtime.configure()  # every process that runs a flow: project loggers, harmless warnings filtered

# Flow parameter types. Prefect's API stores a run's parameters before any flow code runs, so the
# deployment's parameter schema (enforced by the server: prefect.yaml's enforce_parameter_schema) refuses a
# value holding credentials first; resolve_config refuses it again for direct calls.
CredentialFree = Annotated[str, Field(json_schema_extra=credential_free_schema())]
Overrides = list[CredentialFree] | None


def resolve_config(config: str | None, overrides: list[str] | None) -> PipelineConfig:
    """Load and validate the config, and log where it came from (errors name the file and key).

    The device is logged as configured: resolving ``auto`` imports torch, which a flow with nothing to
    compute never needs, so stages that run a model log the device they resolved.
    """
    cfg = load_config(config, overrides or [])
    logger = get_run_logger()
    logger.info(
        "config %s (overrides: %s) device=%s",
        config or "<defaults>",
        [redact_secrets(o) for o in overrides or []],
        cfg.device,
    )
    return cfg


def table_artifact(key: str, rows: list[dict[str, Any]], description: str) -> None:
    """A Prefect table artifact (keys must be lowercase-dashed); silently skipped when rows are empty."""
    if rows:
        create_table_artifact(key=key, table=rows, description=description)


def markdown_artifact(key: str, markdown: str, description: str) -> None:
    create_markdown_artifact(key=key, markdown=markdown, description=description)
