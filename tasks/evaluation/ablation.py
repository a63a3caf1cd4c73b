"""The rows of the paper's ablation tables (Tables 2-4) as config overrides, and their result tables.

Each row is the default config plus a few overrides; rows that share a stage with the default run share
its fingerprint (flows/train.py), so only what a row changes is trained again. Table 3 is stage 1 only
(VQ reconstruction MSE); Tables 2 and 4 train every stage and evaluate on the test split.

Table 2 as the paper runs it: row 1 is SadTalker itself (its released ExpNet + PoseVAE, nothing trained),
row 2 the default run's face branch with SadTalker's released ExpNet as the lips (frozen, not retrained on
MEAD), row 3 the default run. Rows 1 and 2 are the default run's stages evaluated with another ``method``
(``tasks/evaluation/run.py``): they train nothing of their own, and every row is rendered and scored by
the same evaluation.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any

from emotalker.configs.schema import PipelineConfig, apply_overrides
from emotalker.tasks.training.stages import STAGES

# the paper's numbers (EmoTalker, Tables 2-4): Table 2 F-LMD/M-LMD/Sync, Table 3 VQ MSE, Table 4 F-LMD/EmoAcc
PAPER_TABLE2: dict[str, dict[str, float]] = {
    "SadTalker ExpNet + PoseVAE": {"F-LMD": 4.764, "M-LMD": 5.620, "Sync": 2.120},
    "our face + ExpNet lip": {"F-LMD": 4.544, "M-LMD": 5.231, "Sync": 2.473},
    "ours": {"F-LMD": 4.348, "M-LMD": 5.139, "Sync": 2.304},
}
PAPER_TABLE3_MSE: dict[str, float] = {
    "l = 4": 1.3e-3,
    "l = 2": 1.6e-3,
    "w/o L_cls": 2.1e-3,
}
PAPER_TABLE3_CODEBOOK: tuple[tuple[int, float], ...] = ((512, 1.69e-3), (1024, 1.32e-3), (2048, 1.37e-3))
PAPER_TABLE4: dict[str, dict[str, float]] = {
    "default": {"F-LMD": 4.348, "EmoAcc": 0.425},
    "w/o bias mask": {"F-LMD": 4.729, "EmoAcc": 0.407},
    "w/o alignment mask": {"F-LMD": 4.802, "EmoAcc": 0.413},
    "w/o contrastive loss": {"F-LMD": 4.964, "EmoAcc": 0.392},
}
TABLE_METRICS: dict[int, tuple[str, ...]] = {
    2: ("F-LMD", "M-LMD", "Sync", "LipL2"),
    3: ("VQ MSE",),
    4: ("F-LMD", "EmoAcc", "EmoAcc_stage1_head", "FaceL2"),
}
TABLE_TITLES = {
    2: "Table 2: lip branch vs SadTalker's ExpNet lips",
    3: "Table 3: stage-1 VQ-VAE reconstruction (l, L_cls, codebook size)",
    4: "Table 4: stage-2 masks and contrastive loss",
}


@dataclass(frozen=True)
class Variant:
    """One trained configuration: the overrides it adds and the stages it needs."""

    overrides: tuple[str, ...]
    stages: tuple[str, ...]  # ("vqvae",) for Table 3, every stage for Tables 2 and 4
    evaluate: bool
    method: str = "emotalker"  # how the evaluation makes motion (tasks/evaluation/run.py:METHODS)

    @property
    def ident(self) -> tuple[str, ...]:
        """What tells rows' results apart: the overrides, and the method when it is not EmoTalker."""
        return self.overrides + ((f"method={self.method}",) if self.method != "emotalker" else ())

    @property
    def key(self) -> str:
        """A registry-alias-safe name: ``default`` or the overrides (and method), slugged."""
        if not self.ident:
            return "default"
        return re.sub(r"[^A-Za-z0-9_-]+", "-", "_".join(self.ident)).strip("-").lower()[:120]

    @property
    def alias(self) -> str:
        """The registry alias of the versions this row trained or reused (``best`` stays the pipeline's)."""
        return f"ablate-{self.key}"


@dataclass(frozen=True)
class AblationRow:
    table: int
    name: str
    paper: dict[str, float]
    variant: Variant
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _full(*overrides: str, method: str = "emotalker") -> Variant:
    return Variant(tuple(overrides), STAGES, True, method)


def _stage1(*overrides: str) -> Variant:
    return Variant(tuple(overrides), ("vqvae",), False)


def ablation_rows(cfg: PipelineConfig) -> list[AblationRow]:
    """The rows of the configured tables (``ablation.tables``) with their overrides."""
    rows: list[AblationRow] = []
    tables = set(cfg.ablation.tables)
    if 2 in tables:
        rows += [
            AblationRow(
                2,
                "SadTalker ExpNet + PoseVAE",
                PAPER_TABLE2["SadTalker ExpNet + PoseVAE"],
                _full(method="sadtalker"),
                "SadTalker's released ExpNet + PoseVAE (render.checkpoint or sadtalker.*), nothing trained",
            ),
            AblationRow(
                2,
                "our face + ExpNet lip",
                PAPER_TABLE2["our face + ExpNet lip"],
                _full(method="sadtalker_lips"),
                "the default run's face branch; SadTalker's released ExpNet lips, frozen, not retrained",
            ),
            AblationRow(2, "ours", PAPER_TABLE2["ours"], _full()),
        ]
    if 3 in tables:
        rows += [
            AblationRow(3, "l = 4", {"VQ MSE": PAPER_TABLE3_MSE["l = 4"]}, _stage1("vqvae.down_t=2")),
            AblationRow(3, "l = 2", {"VQ MSE": PAPER_TABLE3_MSE["l = 2"]}, _stage1("vqvae.down_t=1")),
            AblationRow(
                3, "w/o L_cls", {"VQ MSE": PAPER_TABLE3_MSE["w/o L_cls"]}, _stage1("vqvae.emotion_head=false")
            ),
        ]
        for size, (paper_size, mse) in zip(cfg.ablation.codebook_sizes, PAPER_TABLE3_CODEBOOK, strict=True):
            rows.append(
                AblationRow(
                    3,
                    f"codebook {size}",
                    {"VQ MSE": mse},
                    _stage1(f"vqvae.codebook_size={size}"),
                    f"stands for the paper's {paper_size}" if size != paper_size else "",
                )
            )
    if 4 in tables:
        switches = {
            "default": (),
            "w/o bias mask": ("transformer.use_biased_mask=false",),
            "w/o alignment mask": ("transformer.use_alignment_mask=false",),
            "w/o contrastive loss": ("transformer.use_contrastive=false",),
        }
        rows += [AblationRow(4, name, PAPER_TABLE4[name], _full(*ov)) for name, ov in switches.items()]
    return [_canonical(cfg, r) for r in rows]


def _canonical(cfg: PipelineConfig, row: AblationRow) -> AblationRow:
    """Drop overrides that restate the config's own value, so such a row IS the default run."""
    base = cfg.model_dump(mode="json")
    kept = tuple(
        o
        for o in row.variant.overrides
        if PipelineConfig.model_validate(apply_overrides(copy.deepcopy(base), [o])) != cfg
    )
    v = Variant(kept, row.variant.stages, row.variant.evaluate, row.variant.method)
    return AblationRow(row.table, row.name, row.paper, v, row.note, row.extra)


def variants(rows: list[AblationRow]) -> list[Variant]:
    """Distinct trained configurations, full ones first (they also provide every stage-1-only row's base)."""
    seen: dict[tuple[str, ...], Variant] = {}
    for r in rows:
        v = r.variant
        old = seen.get(v.ident)
        if old is None or (v.evaluate and not old.evaluate):
            seen[v.ident] = v
    return sorted(seen.values(), key=lambda v: (not v.evaluate, v.overrides != (), v.ident))


def variant_overrides(cfg: PipelineConfig, overrides: list[str], v: Variant) -> list[str]:
    """The overrides one row trains and evaluates with: the run's, the row's, its registry alias, and
    ``ablation.eval_max_clips`` (evaluation settings are in no training fingerprint: stages are reused)."""
    # ablation rows compare with each other, not with Table 1's baselines (real video, floors): not rescored
    out = [*overrides, *v.overrides, f"train.model_alias={v.alias}", "eval.methods=[]"]
    if cfg.ablation.eval_max_clips is not None:
        out.append(f"eval.max_clips={cfg.ablation.eval_max_clips}")
    return out


def _fmt(v: Any) -> Any:
    return round(float(v), 6) if isinstance(v, int | float) and not isinstance(v, bool) else v


def table_rows(
    table: int, rows: list[AblationRow], results: dict[tuple[str, ...], dict[str, Any]]
) -> list[dict]:
    """One line per row: each metric beside the paper's value; unknown values are ``skipped`` / ``n/a``."""
    out = []
    for r in (r for r in rows if r.table == table):
        res = results.get(r.variant.ident)
        line: dict[str, Any] = {"row": r.name}
        for m in TABLE_METRICS[table]:
            line[f"{m} paper"] = _fmt(r.paper[m]) if m in r.paper else "n/a"
            if res is None or m not in res:
                line[f"{m} this run"] = "skipped"
            else:
                line[f"{m} this run"] = _fmt(res[m])
        line["overrides"] = " ".join(r.variant.ident)
        line["note"] = r.note
        out.append(line)
    return out


def row_versions(results: dict[tuple[str, ...], dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per trained configuration (``default``: the config itself): its row run, alias and the registered
    version of every stage it trained or reused, as the ablate flow returns them."""
    return {
        "_".join(k) or "default": {
            "run_id": r["run_id"],
            "alias": r["alias"],
            **{s: r[s]["registered"]["version"] for s in STAGES if s in r},
        }
        for k, r in results.items()
    }
