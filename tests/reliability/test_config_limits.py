"""Configs that cannot work are refused at load with one line naming the key (issue 30, cases 4-6)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from emotalker.configs.schema import MAX_CONFIG_NODES, ConfigError, PipelineConfig, load_config
from emotalker.configs.secrets import CREDENTIALS_PATTERN, credential_keys, holds_credentials, redact_secrets


@pytest.mark.parametrize(
    "override, key",
    [
        ("data.max_clips=-1", "data.max_clips"),
        ("transformer.n_heads=0", "transformer.n_heads"),
        ("transformer.dropout=1.0", "transformer.dropout"),
        ("vqvae.ema_decay=1.5", "vqvae.ema_decay"),
        ("vqvae.stride_t=3", "vqvae.stride_t"),
        ("lip.lip_mix=-0.1", "lip.lip_mix"),
        ("seed=-1", "seed"),
        ("train.vqvae.betas=[0.9, 1.0]", "train.vqvae.betas.1"),
        ("eval.max_clips=0", "eval.max_clips"),
        ("audio.kmeans_n_init=0", "audio.kmeans_n_init"),
    ],
)
def test_out_of_range_values_are_refused_naming_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config("demo", [override])
    msg = str(err.value)
    assert "\n" not in msg and f"invalid config: {key}:" in msg, msg


@pytest.mark.parametrize(
    "overrides, needle",
    [
        (["transformer.n_heads=3"], "transformer.d_model (64) must be divisible by transformer.n_heads (3)"),
        (["train.transformer.window=30"], "train.transformer.window (30) must be a multiple of"),
        (["vqvae.down_t=3", "train.transformer.window=36"], "= 8"),
        (["audio.kmeans_k=300", "audio.kmeans_sample_frames=200"], "audio.kmeans_sample_frames (200)"),
    ],
)
def test_cross_field_rules_are_checked_at_load(overrides: list[str], needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config("demo", overrides)
    assert needle in str(err.value) and "Value error" not in str(err.value), str(err.value)


def test_shipped_configs_satisfy_every_rule() -> None:
    for name in ("paper", "demo"):
        assert isinstance(load_config(name), PipelineConfig)


BOMB = """\
a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


def test_a_yaml_bomb_in_storage_options_is_refused_at_once(tmp_path: Path) -> None:
    cfg = tmp_path / "bomb.yaml"
    cfg.write_text("paths:\n  storage_options:\n" + "".join(f"    {line}\n" for line in BOMB.splitlines()))
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=rf"bomb.yaml: refused: .*more than {MAX_CONFIG_NODES} values"):
        load_config(cfg)
    assert time.perf_counter() - start < 5  # it used to run for minutes and gigabytes
    with pytest.raises(ConfigError, match="override 'paths.storage_options': value expands to more than"):
        load_config(None, ["paths.storage_options={" + ", ".join(BOMB.splitlines()) + "}"])


def test_deep_nesting_and_self_reference_are_refused(tmp_path: Path) -> None:
    deep = tmp_path / "deep.yaml"
    deep.write_text("paths:\n  storage_options: " + "[" * 200 + "]" * 200 + "\n")
    with pytest.raises(ConfigError, match="nests deeper than"):
        load_config(deep)
    loop = tmp_path / "loop.yaml"
    loop.write_text("paths:\n  storage_options: &x {a: *x}\n")
    with pytest.raises(ConfigError, match="refers to itself|nests deeper"):
        load_config(loop)


def test_aliases_within_the_limits_still_work(tmp_path: Path) -> None:
    cfg = tmp_path / "ok.yaml"
    cfg.write_text("train:\n  vqvae: &s {steps: 7}\n  lip: *s\n")
    loaded = load_config(cfg)
    assert loaded.train.vqvae.steps == loaded.train.lip.steps == 7


SECRET = "Bearer abcDEF123456789"


@pytest.mark.parametrize(
    "options, key",
    [
        ({"client_kwargs": {"headers": {"Authorization": SECRET}}}, "client_kwargs.headers.Authorization"),
        ({"client_kwargs": {"headers": {"Cookie": "session=1"}}}, "client_kwargs.headers.Cookie"),
        ({"client_kwargs": {"headers": {"X-Api-Key": "k"}}}, "client_kwargs.headers.X-Api-Key"),
        ({"headers": [{"name": SECRET}]}, "headers[0].name"),
        ({"config_kwargs": {"note": "Basic dXNlcjpwYXNzd29yZA=="}}, "config_kwargs.note"),
    ],
)
def test_credentials_at_any_depth_are_refused(options: dict, key: str) -> None:
    assert credential_keys(options) == [key]
    with pytest.raises(ConfigError) as err:
        load_config(None, [f"paths.storage_options={options!r}"])
    assert "abcDEF123456789" not in str(err.value) and "dXNlcjpwYXNzd29yZA" not in str(err.value)


def test_authorization_values_are_found_and_masked_in_text() -> None:
    for text in (SECRET, "Authorization: token-x", "x-api-key=abc", "Basic dXNlcjpwYXNzd29yZA=="):
        assert holds_credentials(text) and re.search(CREDENTIALS_PATTERN, text), text
        masked = redact_secrets(text)
        assert "<redacted>" in masked and "abcDEF" not in masked and "dXNlcj" not in masked, masked
    for harmless in ("basic settings", "token embeddings", "use_content_tokens=false", "s3://bucket/a"):
        assert not holds_credentials(harmless) and not re.search(CREDENTIALS_PATTERN, harmless), harmless
