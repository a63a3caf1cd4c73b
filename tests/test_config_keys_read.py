"""Every config key is read somewhere: walks the schema and looks for each key in the package source.

A key counts as read when the code outside its own definition uses it as an attribute (``.key``), a
string (``"key"``, e.g. ``model_dump()["key"]`` or ``paths.resolve("key")``) or a parameter/keyword
(``key=`` / ``key:``, e.g. a model constructor fed by ``model_dump()``). Keys that nothing reads are
options that do nothing, which the project does not allow.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from emotalker.configs.schema import PipelineConfig

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = ("configs", "flows", "tasks", "models", "storage")
FIELD_DEFINITION = re.compile(r"^\s{4}\w+\s*:\s*[^=]+=.*$|^\s{4}\w+\s*:\s*[\w\[\]|., ]+$", re.MULTILINE)


def leaf_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Dotted names of every leaf field of a config model."""
    out = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out += leaf_keys(ann, f"{prefix}{name}.")
        else:
            out.append(prefix + name)
    return out


def package_source() -> str:
    parts = []
    for d in PACKAGE_DIRS:
        for p in sorted((ROOT / d).rglob("*.py")):
            text = p.read_text()
            if p == ROOT / "configs" / "schema.py":  # the definitions themselves do not count as reads
                text = FIELD_DEFINITION.sub("", text)
            parts.append(text)
    return "\n".join(parts)


def is_read(key: str, source: str) -> bool:
    k = re.escape(key)
    return bool(re.search(rf"\.{k}\b|[\"']{k}[\"']|\b{k}\s*[=:][^=]", source))


def test_every_config_key_is_read_somewhere() -> None:
    source = package_source()
    keys = leaf_keys(PipelineConfig)
    assert "train.vqvae.betas" in keys and "transformer.contrastive_temperature" in keys  # the walk is deep
    unread = [k for k in keys if not is_read(k.rsplit(".", 1)[-1], source)]
    assert unread == [], f"config keys read nowhere: {unread}"


def test_the_check_flags_a_key_nothing_reads() -> None:
    source = "def f(cfg):\n    return cfg.train.vqvae.lr\n"
    assert is_read("lr", source)
    assert not is_read("num_workers", source)
    assert not is_read(
        "num_workers", FIELD_DEFINITION.sub("", "class A:\n    num_workers: int = Field(0, ge=0)\n")
    )
