from pathlib import Path

import pytest

from emotalker.configs.schema import ConfigError, PipelineConfig, apply_overrides, dump_config, load_config

ROOT = Path(__file__).resolve().parents[1]


def test_paper_yaml_holds_the_paper_defaults():
    cfg = load_config(ROOT / "configs" / "paper.yaml")
    assert cfg == PipelineConfig()
    # spot-check the paper's numbers (Sec. 4.1 / official opt.py)
    assert (cfg.vqvae.codebook_size, cfg.vqvae.code_dim, cfg.vqvae.ema_decay) == (1024, 256, 0.99)
    assert cfg.vqvae.stride_t**cfg.vqvae.down_t == 4
    assert (cfg.transformer.n_layers, cfg.transformer.n_heads, cfg.transformer.d_model) == (6, 4, 256)
    assert cfg.transformer.alibi_window == 4  # h of Eq. 5; Eq. 7 k follows from the audio rate
    assert (cfg.audio.kmeans_k, cfg.audio.content_layer) == (200, 9)
    assert cfg.train.vqvae.batch_size == 512 and cfg.train.transformer.batch_size == 128
    assert cfg.train.transformer.lr == 1e-4


# the resolved paper config before configs/paper.yaml was trimmed to the paper's own settings (issue #25)
PAPER_FINGERPRINT = "9fea9b2b6c7de25c"  # + eval keys of issue #27


def test_paper_yaml_resolves_to_exactly_the_schema_defaults():
    """paper.yaml lists only the paper's settings: with the schema's defaults for the rest it must resolve to
    the very same config (every field, and so every fingerprint of stores and registered models)."""
    cfg, defaults = load_config(ROOT / "configs" / "paper.yaml"), PipelineConfig()
    assert cfg.model_dump(mode="json") == defaults.model_dump(mode="json")
    assert cfg.fingerprint() == defaults.fingerprint() == PAPER_FINGERPRINT
    for section in PipelineConfig.model_fields:
        if hasattr(getattr(cfg, section), "model_dump"):
            assert cfg.fingerprint(section) == defaults.fingerprint(section), section


def test_every_paper_yaml_setting_names_its_source():
    """Each key of paper.yaml carries a comment with its source, on its line or on a section above it."""
    stack: list[tuple[int, bool]] = []  # (indent, commented) of the enclosing sections
    for line in (ROOT / "configs" / "paper.yaml").read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        indent = len(line) - len(line.lstrip())
        while stack and stack[-1][0] >= indent:
            stack.pop()
        commented = "#" in line
        key, _, value = line.split("#")[0].partition(":")
        if value.strip():  # a setting
            assert commented or any(c for _, c in stack), f"no source for {key.strip()!r}"
        else:
            stack.append((indent, commented))


def test_demo_yaml_validates_and_is_small():
    cfg = load_config(ROOT / "configs" / "demo.yaml")
    assert cfg.vqvae.codebook_size < PipelineConfig().vqvae.codebook_size
    assert cfg.paths.resolve("features") == Path("data/demo/features")


def test_overrides_parse_yaml_values_and_keep_sibling_defaults():
    cfg = load_config(None, ["train.vqvae.steps=7", "data.test_actors=[M001, W002]", "device=cpu"])
    assert cfg.train.vqvae.steps == 7
    assert cfg.train.vqvae.batch_size == 512  # sibling default survives a partial override
    assert cfg.data.test_actors == ["M001", "W002"]
    assert cfg.torch_device() == "cpu"


@pytest.mark.parametrize(
    "overrides, needle",
    [
        (["vqvae.codebook_sise=3"], "codebook_sise"),
        (["train.vqvae.steps=-1"], "steps"),
        (["synthetic.emotions=[angry, bored]"], "bored"),
        (["no_equals_sign"], "section.key=value"),
    ],
)
def test_bad_overrides_name_the_key(overrides, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config(None, overrides)


def test_bad_files_give_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("paths: [unclosed")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(listy)


def test_dump_round_trips_and_fingerprint_tracks_sections(tmp_path):
    cfg = load_config(None, ["audio.kmeans_k=50"])
    again = load_config(dump_config(cfg, tmp_path / "c.yaml"))
    assert again == cfg
    other = load_config(None, ["audio.kmeans_k=51"])
    assert cfg.fingerprint("audio") != other.fingerprint("audio")
    assert cfg.fingerprint("face") == other.fingerprint("face")


def test_apply_overrides_refuses_to_descend_into_a_value():
    with pytest.raises(ConfigError, match="not a section"):
        apply_overrides({"seed": 1}, ["seed.x=2"])


def test_feature_stores_can_live_at_an_fsspec_url():
    local = load_config(None, ["paths.root=/data/x"])
    assert local.paths.store_root() == "/data/x/features"
    remote = load_config(None, ["paths.features_url=s3://bucket/emotalker/features"])
    assert remote.paths.store_root() == "s3://bucket/emotalker/features"  # not collapsed to s3:/bucket
    assert remote.paths.resolve("features") == Path("data/features")  # local bookkeeping stays local
