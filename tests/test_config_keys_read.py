"""Every config key is read somewhere, by its full dotted path.

A key ``a.b.c`` counts as read when the package code (outside the schema's field definitions) reads it
through its section ``a.b``: the full chain (``cfg.a.b.c``), a name bound to the section (``lc = cfg.a.b``,
``hparams=cfg.a.b``, a parameter annotated with the section's class) followed by ``name.c`` / ``name["c"]``,
or the section dumped into a constructor (``cfg.a.b.model_dump()``, ``from_config(cfg.a.b)``) whose
parameters include ``c``. A top-level key is read as ``<PipelineConfig name>.key``. Keys nothing reads
are options that do nothing, which the project does not allow; a leaf name alone (``seed``, ``window``,
``fps``) proves nothing, as every such name appears somewhere.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

from pydantic import BaseModel

from emotalker.configs.schema import PipelineConfig

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = ("configs", "flows", "tasks", "models", "storage")
END = r"(?![\w.(\[])"  # the expression ends here (no further attribute, call or index)
FIELD_DEFINITION = re.compile(r"^\s{4}\w+\s*:\s*[^=]+=.*$|^\s{4}\w+\s*:\s*[\w\[\]|., ]+$", re.MULTILINE)


def leaf_keys(model: type[BaseModel], prefix: str = "") -> dict[str, type[BaseModel]]:
    """Dotted name of every leaf field -> the class of its section."""
    out: dict[str, type[BaseModel]] = {}
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out |= leaf_keys(ann, f"{prefix}{name}.")
        else:
            out[prefix + name] = model
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


def section_classes(section: str) -> list[str]:
    """The section's class and its config base classes (a parameter may be annotated with either)."""
    cls: type[BaseModel] = PipelineConfig
    for part in filter(None, section.split(".")):
        cls = cls.model_fields[part].annotation  # type: ignore[assignment]
    return [c.__name__ for c in cls.__mro__ if issubclass(c, BaseModel) and not c.__name__.startswith("_")][
        :-1
    ]


@functools.cache  # pure in (section, source); every key of a section asks again (was 6 min of CI)
def section_expr(section: str, source: str) -> str:
    """Regex of an expression evaluating to the section: the full chain or an alias of its parent + name."""
    parent, _, last = section.rpartition(".")
    alts = [rf"\.{re.escape(section)}"]
    alts += [rf"\b{n}\.{re.escape(last)}" for n in section_names(parent, source)]
    return "(?:" + "|".join(alts) + ")"


@functools.cache
def section_names(section: str, source: str) -> frozenset[str]:
    """Names bound to a section (assignments, keyword arguments, annotated parameters), transitively."""
    names = {
        n
        for c in section_classes(section)
        for n in re.findall(rf"\b(\w+)\s*:\s*{c}\b", _lines_with(c, source))
    }
    if section:
        expr, last = section_expr(section, source), section.rpartition(".")[2]
        names |= set(re.findall(rf"\b(\w+)\s*=\s*[\w.]*{expr}{END}", _lines_with(last, source)))
    while True:
        more = {m for n in names for m in _aliases(n, source)} - names
        if not more:
            return frozenset(names)
        names |= more


@functools.cache
def _aliases(name: str, source: str) -> frozenset[str]:
    """Names assigned an expression that ends in ``name`` (``x = name``, ``x = a.name``)."""
    return frozenset(re.findall(rf"\b(\w+)\s*=\s*[\w.]*\b{name}(?![\w.(\[])", _lines_with(name, source)))


@functools.cache
def _lines_with(word: str, source: str) -> str:
    """The source lines that contain ``word``: every pattern searched for it matches within one line, and
    scanning a few lines instead of the whole package makes the check take seconds, not minutes."""
    return "\n".join(line for line in source.splitlines() if word in line)


@functools.cache
def _dumped(section: str, source: str) -> bool:
    """Whether the section is dumped into a constructor (``cfg.a.model_dump()``, ``from_config(cfg.a)``)."""
    expr = section_expr(section, source)
    return re.search(rf"{expr}\.model_dump\(|from_config\([\w.]*{expr}{END}", source) is not None


def is_read(key: str, source: str) -> bool:
    section, _, leaf = key.rpartition(".")
    lf = re.escape(leaf)
    text = _lines_with(leaf, source)  # every read below names the leaf on its line
    if section and re.search(rf"\.{re.escape(key)}\b", text):
        return True
    names = section_names(section, source)
    for name in names:
        if re.search(rf"\b{name}\.{lf}\b|\b{name}\[[\"']{lf}[\"']\]|\b{name}\.\w+\([\"']{lf}[\"']", text):
            return True
    if section:
        expr = section_expr(section, source)
        if re.search(rf"{expr}\.\w+\([\"']{lf}[\"']", text):  # e.g. cfg.paths.resolve("manifest")
            return True
        if _dumped(section, source) and re.search(rf"\b{lf}\s*[:=][^=]", text):
            return True
    return False


def test_every_config_key_is_read_through_its_full_path() -> None:
    source = package_source()
    keys = leaf_keys(PipelineConfig)
    assert "train.vqvae.betas" in keys and "transformer.contrastive_temperature" in keys  # the walk is deep
    unread = [k for k in keys if not is_read(k, source)]
    assert unread == [], f"config keys read nowhere: {unread}"


def test_the_check_reads_the_full_path_not_the_leaf_name() -> None:
    source = "def f(cfg: PipelineConfig):\n    lc = cfg.lip\n    return cfg.train.vqvae.seed, lc.lip_mix\n"
    assert is_read("train.vqvae.seed", source) and is_read("lip.lip_mix", source)
    # the same leaf under another section, or at the top level, is not read by that line
    assert not is_read("seed", source) and not is_read("train.lip.seed", source)
    assert not is_read("audio.seed", source) and not is_read("transformer.lip_mix", source)
    hp = "x = Plan(hparams=cfg.train.lip)\ndef g(p):\n    return p.hparams.window\n"
    assert is_read("train.lip.window", hp) and not is_read("train.vqvae.window", hp)
    dump = "net = LipBranch(**cfg.lip.model_dump())\n"
    dump += "class LipBranch:\n    def __init__(self, lip_mix=0.2): ...\n"
    assert is_read("lip.lip_mix", dump) and not is_read("vqvae.lip_mix", dump)
    assert not is_read(
        "data.workers", FIELD_DEFINITION.sub("", "class A:\n    workers: int = Field(0, ge=0)\n")
    )
