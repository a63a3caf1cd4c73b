"""Ablation rows (Tables 2-4) as overrides of the config, and the tables built from their results."""

from __future__ import annotations

import pytest

from emotalker.configs.schema import ConfigError, load_config
from emotalker.tasks.evaluation.ablation import (
    ablation_rows,
    table_rows,
    variant_overrides,
    variants,
)
from emotalker.tasks.training.stages import STAGES


def test_paper_rows_share_the_default_run_and_change_one_switch_each() -> None:
    cfg = load_config("configs/paper.yaml")
    rows = ablation_rows(cfg)
    by = {(r.table, r.name): r for r in rows}
    # "ours" (Table 2), "l = 4" and "codebook 1024" (Table 3), "default" (Table 4) are the config itself
    for key in [(2, "ours"), (3, "l = 4"), (3, "codebook 1024"), (4, "default")]:
        assert by[key].variant is not None and by[key].variant.overrides == (), key
    # Table 2 rows 1 and 2 train nothing of their own: the default run's stages, SadTalker's released
    # networks in the evaluation (not lip_mix=0, which retrains Phi_A / Phi_M1 like row 3)
    sad, lips = by[(2, "SadTalker ExpNet + PoseVAE")].variant, by[(2, "our face + ExpNet lip")].variant
    assert (sad.overrides, sad.method, sad.evaluate) == ((), "sadtalker", True)
    assert (lips.overrides, lips.method, lips.evaluate) == ((), "sadtalker_lips", True)
    assert by[(2, "ours")].variant.method == "emotalker"
    assert (
        len({sad.key, lips.key, by[(2, "ours")].variant.key}) == 3 and sad.alias == "ablate-method-sadtalker"
    )
    assert by[(3, "l = 2")].variant.overrides == ("vqvae.down_t=1",)
    assert by[(3, "w/o L_cls")].variant.overrides == ("vqvae.emotion_head=false",)
    assert by[(4, "w/o bias mask")].variant.overrides == ("transformer.use_biased_mask=false",)
    vs = variants(rows)
    # default + SadTalker + ExpNet lip + 3 masks/loss (full) + l=2, w/o L_cls, 512, 2048 (stage 1 only)
    assert len(vs) == 10 and vs[0].ident == () and vs[0].stages == STAGES
    assert [v.method for v in vs[1:3]] == ["sadtalker", "sadtalker_lips"]  # after the run they reuse
    assert [v.stages for v in vs[-4:]] == [("vqvae",)] * 4 and not any(v.evaluate for v in vs[-4:])
    # every override is a valid config change
    for v in vs:
        assert load_config("configs/paper.yaml", list(v.overrides)) != cfg or v.overrides == ()


def test_demo_rows_scale_the_codebooks_and_tables_can_be_chosen() -> None:
    cfg = load_config("configs/demo.yaml", ["ablation.tables=[3]"])
    rows = ablation_rows(cfg)
    assert {r.table for r in rows} == {3}
    sizes = {r.name: r.variant.overrides for r in rows if r.name.startswith("codebook")}
    assert sizes == {
        "codebook 32": ("vqvae.codebook_size=32",),
        "codebook 64": (),  # the demo's own codebook: the default run
        "codebook 128": ("vqvae.codebook_size=128",),
    }
    with pytest.raises(ConfigError, match="codebook_sizes"):
        load_config("configs/demo.yaml", ["ablation.codebook_sizes=[32, 64]"])
    with pytest.raises(ConfigError, match="tables"):
        load_config("configs/demo.yaml", ["ablation.tables=[1]"])


def test_tables_put_this_run_beside_the_paper() -> None:
    cfg = load_config("configs/demo.yaml", ["ablation.tables=[2, 4]"])
    rows = ablation_rows(cfg)
    results = {
        (): {"F-LMD": 3.25, "LipL2": 0.5, "EmoAcc_stage1_head": 0.75},
        ("method=sadtalker_lips",): {"LipL2": 0.625},
        ("method=sadtalker",): {"F-LMD": 4.5},
    }
    t2 = {line["row"]: line for line in table_rows(2, rows, results)}
    assert t2["ours"]["F-LMD paper"] == 4.348 and t2["ours"]["F-LMD this run"] == 3.25
    assert t2["ours"]["Sync this run"] == "skipped"  # not computed (no renders / SyncNet)
    assert t2["our face + ExpNet lip"]["LipL2 this run"] == 0.625 and t2["ours"]["LipL2 paper"] == "n/a"
    assert t2["SadTalker ExpNet + PoseVAE"]["F-LMD this run"] == 4.5
    assert t2["SadTalker ExpNet + PoseVAE"]["LipL2 this run"] == "skipped"
    assert t2["our face + ExpNet lip"]["overrides"] == "method=sadtalker_lips"
    t4 = {line["row"]: line for line in table_rows(4, rows, results)}
    assert t4["default"]["EmoAcc_stage1_head this run"] == 0.75
    assert t4["w/o bias mask"]["F-LMD this run"] == "skipped"  # no result for that row
    assert t4["w/o bias mask"]["overrides"] == "transformer.use_biased_mask=false"


def test_each_row_trains_under_its_alias_and_evaluates_ablation_eval_max_clips() -> None:
    cfg = load_config("configs/demo.yaml")
    row = next(v for v in variants(ablation_rows(cfg)) if v.overrides)
    ov = variant_overrides(cfg, ["device=cpu"], row)
    assert ov[: 1 + len(row.overrides)] == ["device=cpu", *row.overrides]
    assert f"train.model_alias=ablate-{row.key}" in ov
    assert ov[-1] == f"eval.max_clips={cfg.ablation.eval_max_clips}"
    assert load_config("configs/demo.yaml", ov).eval.max_clips == cfg.ablation.eval_max_clips == 2
    paper = load_config("configs/paper.yaml")
    assert not any(o.startswith("eval.max_clips") for o in variant_overrides(paper, [], row))
    assert load_config("configs/demo.yaml", ov).eval.methods == []  # Table 1's baselines are not rescored
