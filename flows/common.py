"""What every flow does first: resolve its config and make the run's inputs visible in Prefect."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from prefect import Flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from pydantic import Field

from emotalker.configs.schema import PipelineConfig, load_config
from emotalker.configs.secrets import (
    CREDENTIALS_HELP,
    credential_free_schema,
    holds_credentials,
    redact_secrets,
)
from emotalker.flows import runtime

runtime.configure()  # every process that runs a flow: project loggers, harmless warnings filtered

# Flow parameter types. Prefect's API stores a run's parameters before any flow code runs, so the
# deployment's parameter schema (enforced by the server: prefect.yaml's enforce_parameter_schema) refuses a
# value holding credentials first; a direct call of a pipeline_flow refuses it before Prefect creates a run.
CredentialFree = Annotated[str, Field(json_schema_extra=credential_free_schema())]
Overrides = list[CredentialFree] | None
F = TypeVar("F", bound=Callable[..., Any])

# what the parameters many flows share mean (Prefect shows these in the UI and in deployments' schemas)
PARAMETER_DOCS: dict[str, str] = {
    "config": "a shipped config by name (paper, demo) or a YAML file path.",
    "overrides": '``key=value`` config overrides, e.g. ``["train.vqvae.steps=100"]``.',
    "parent_run_id": "MLflow run to nest this stage's run under (``reproduce`` passes its own).",
    "stop_after": "end after this many steps of this call (simulates a kill in tests).",
}


class CredentialsInParameters(ValueError):
    """A flow was called with a parameter value that holds credentials; the message names the parameter."""


def refuse_credentials(name: str, params: dict[str, Any]) -> None:
    """Raise (naming the parameter, never its value) when a string or list item holds credentials."""
    for key, value in params.items():
        items = value if isinstance(value, (list, tuple)) else [value]
        for i, item in enumerate(items):
            if isinstance(item, str) and holds_credentials(item):
                where = f"{key}[{i}]" if isinstance(value, (list, tuple)) else key
                raise CredentialsInParameters(
                    f"flow {name}: parameter {where} holds credentials; {CREDENTIALS_HELP}"
                )


class PipelineFlow(Flow):
    """A Prefect flow that refuses credentials in its parameters before Prefect creates (and stores) a run.

    Deployments are refused by the server (their parameter schema); this covers flows called from Python,
    whose runs Prefect creates with the parameters before validating them.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        names = inspect.signature(self.fn).parameters
        given = dict(zip(names, args, strict=False)) | {k: v for k, v in kwargs.items() if k in names}
        refuse_credentials(self.name, given)
        return super().__call__(*args, **kwargs)


def pipeline_flow(name: str) -> Callable[[Callable[..., Any]], PipelineFlow]:
    """``@flow(name=..., log_prints=True)`` for the pipeline's flows, as a ``PipelineFlow`` whose docstring
    (what Prefect shows for its parameters) has the shared parameters' lines (``document_parameters``)."""

    def wrap(fn: Callable[..., Any]) -> PipelineFlow:
        return PipelineFlow(document_parameters(fn), name=name, log_prints=True)

    return wrap


def document_parameters(fn: F) -> F:
    """Put the shared parameters' lines (``PARAMETER_DOCS``) into ``fn``'s ``Args:`` section.

    ``pipeline_flow`` applies it before Prefect reads the docstring; a parameter the docstring already
    describes keeps its own line.
    """
    doc = inspect.cleandoc(fn.__doc__ or "")
    own = set(re.findall(r"^    (\w+):", doc, flags=re.M))
    shared = [p for p in inspect.signature(fn).parameters if p in PARAMETER_DOCS and p not in own]
    lines = "".join(f"    {p}: {PARAMETER_DOCS[p]}\n" for p in shared)
    if "\nArgs:\n" in doc:
        doc = doc.replace("\nArgs:\n", f"\nArgs:\n{lines}", 1)
    elif lines:
        doc = f"{doc}\n\nArgs:\n{lines}"
    fn.__doc__ = doc
    return fn


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
