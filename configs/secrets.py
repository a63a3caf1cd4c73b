"""Credentials never enter the pipeline's config: the one place that finds and masks them.

A config travels everywhere (Prefect flow parameters, logs, MLflow params, the resolved-config artifact),
so values holding credentials are refused when the config is validated; MLflow takes its credentials from
the environment as it documents (``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` or
``MLFLOW_TRACKING_TOKEN``). ``redact_secrets`` masks what other text (a library's error) may still carry.
"""

from __future__ import annotations

import re
from typing import Any

_SECRET_WORDS = ("token", "password", "passwd", "secret", "key", "sig", "signature", "credential")


def _any_case(word: str) -> str:
    """``key`` -> ``[kK][eE][yY]``: JSON Schema patterns (ECMA-262) take no case-insensitive flag."""
    return "".join(f"[{c.lower()}{c.upper()}]" for c in word)


# written once, valid as Python ``re`` and as ECMA-262 (JSON Schema ``pattern``)
_SCHEME = r"[A-Za-z][A-Za-z0-9+.-]*://"
_QUERY_NAME = r"[?&;][^=&;\s]*(?:" + "|".join(_any_case(w) for w in _SECRET_WORDS) + r")[^=&;\s]*="
_USERINFO = r"[^/@\s]+@"
_QUERY_VALUE = r"[^&;\s]+"
# HTTP authorization values ("Bearer <token>", "Basic <base64>") anywhere in a string; "Basic" only as
# the header writes it, so ordinary words ("basic settings") are not taken for one
_AUTH_SCHEME = rf"(?:{_any_case('bearer')}|Basic)"
_AUTH_VALUE = r"[ \t]+[A-Za-z0-9._~+/=-]{8,}"
# secret-bearing header names written as `name: value` / `name=value` (an override's or a mapping's text)
_AUTH_HEADER = (
    r"(?:"
    + "|".join(_any_case(w) for w in ("authorization", "proxy-authorization", "cookie", "x-api-key"))
    + r")['\"]?[ \t]*[:=]"
)
_URL_USERINFO = re.compile(rf"(?P<scheme>{_SCHEME}){_USERINFO}")
_SECRET_QUERY = re.compile(rf"(?P<name>{_QUERY_NAME}){_QUERY_VALUE}")
_SECRET_AUTH = re.compile(rf"(?P<scheme>\b{_AUTH_SCHEME}){_AUTH_VALUE}")
_SECRET_HEADER = re.compile(rf"(?P<name>{_AUTH_HEADER})[^,}}\n]*")
CREDENTIALS_PATTERN = "|".join(
    (f"{_SCHEME}{_USERINFO}", f"{_QUERY_NAME}{_QUERY_VALUE}", f"{_AUTH_SCHEME}{_AUTH_VALUE}", _AUTH_HEADER)
)

CREDENTIALS_HELP = (
    "keep credentials out of configs, overrides and Prefect parameters: MLflow reads "
    "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) from the environment, "
    "fsspec and Dask their own credential files and environment"
)


def redact_secrets(text: str) -> str:
    """Mask credentials (``user:pass@`` and token-like query values in URLs, HTTP authorization values and
    secret headers) before logging or tracking."""
    text = _URL_USERINFO.sub(r"\g<scheme><redacted>@", text)
    text = _SECRET_QUERY.sub(r"\g<name><redacted>", text)
    text = _SECRET_HEADER.sub(r"\g<name> <redacted>", text)
    return _SECRET_AUTH.sub(r"\g<scheme> <redacted>", text)


def holds_credentials(text: str) -> bool:
    """True when ``text`` has a URL with user info, a token-like query value, an HTTP authorization value
    (``Bearer ...``, ``Basic ...``) or a secret header (``Authorization:``, ``Cookie:``, ``X-Api-Key:``)."""
    return redact_secrets(text) != text


# storage_options keys that carry secrets (s3fs key/secret/token, botocore aws_*, gcsfs token, adlfs
# account_key/sas_token/connection_string, http password ...); gcsfs's named token modes are not secrets
# HTTP headers that carry secrets (client_kwargs.headers of s3fs/aiohttp, http's headers ...) too
_CREDENTIAL_KEY = re.compile(
    r"^(key|username|.*secret.*|.*password.*|.*passwd.*|.*token.*|.*credential.*|.*access_key.*|"
    r".*account_key.*|connection_string|sas_.*|.*api_key.*|.*api-key.*|.*private.*|"
    r"(proxy-)?authorization|(set-)?cookie)$",
    re.IGNORECASE,
)
_NAMED_TOKEN_MODES = {"anon", "google_default", "cloud", "browser"}


def credential_keys(options: Any, where: str = "") -> list[str]:
    """Dotted names of the secret-bearing keys in (nested) storage options, at any depth of any mapping
    or list, and of string values that hold credentials whatever their key."""
    found: list[str] = []
    if isinstance(options, dict):
        for k, v in options.items():
            name = f"{where}{k}"
            if _CREDENTIAL_KEY.match(str(k)) and not (str(k) == "token" and v in _NAMED_TOKEN_MODES):
                found.append(name)
            elif isinstance(v, str) and holds_credentials(v):
                found.append(name)
            else:
                found += credential_keys(v, f"{name}.")
    elif isinstance(options, list | tuple):
        for i, v in enumerate(options):
            name = f"{where.rstrip('.')}[{i}]"
            if isinstance(v, str) and holds_credentials(v):
                found.append(name)
            else:
                found += credential_keys(v, f"{name}.")
    return found


# what a refused Prefect parameter says: "... for field 'overrides[0]'. Failure reason: '<this>' was expected"
PARAMETER_ADVICE = (
    "no credentials (set MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD in the environment)"
)


def credential_free_schema() -> dict[str, Any]:
    """JSON Schema of a string that holds no credentials, for flow parameters.

    Prefect's API stores a flow run's parameters before any flow code runs; a deployment that enforces its
    parameter schema has the server refuse them first. jsonschema echoes the refused value in every message
    but ``const``'s, so the rule reads "a value holding credentials must equal the advice" (it never can)
    and the refusal shows the advice instead of the secret.
    """
    return {"if": {"pattern": CREDENTIALS_PATTERN}, "then": {"const": PARAMETER_ADVICE}}
