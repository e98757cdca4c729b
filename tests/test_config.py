"""Config: one precedence rule, clear errors for bad keys, types and values, --dry-run."""

from __future__ import annotations

import pytest
import yaml
from conftest import ROOT, make_tiny_pipeline

from stackgan.cli import train_main
from stackgan.config import Config, ConfigError, config_from_dict, dump_config, load_config, parse_override, validate

TINY = ROOT / "configs" / "shapes-tiny.yaml"


# ------------------------------------------------------------------ precedence
def test_defaults_preset_overrides_precedence():
    defaults = load_config()
    assert defaults == validate(Config())
    assert defaults.model.gf == 128 and defaults.train.max_steps == 20000

    preset = load_config(TINY)
    assert preset.model.gf == 8 and preset.train.max_steps == 30  # preset beats defaults
    assert preset.train.lr_g == defaults.train.lr_g  # keys the preset leaves out keep their defaults

    cfg = load_config(TINY, ["model.gf=4", "train.max_steps=7", "train.lr_g=1e-3", "train.stages=[1]"])
    assert cfg.model.gf == 4 and cfg.train.max_steps == 7  # the command line beats the preset
    assert cfg.train.lr_g == 1e-3 and isinstance(cfg.train.lr_g, float)
    assert cfg.train.stages == [1]
    assert cfg.model.df == preset.model.df
    # The last of two overrides of one key wins.
    assert load_config(TINY, ["train.max_steps=3", "train.max_steps=5"]).train.max_steps == 5


def test_override_parsing():
    assert parse_override("train.batch_size=32") == {"train": {"batch_size": 32}}
    assert parse_override("text.model=local-dir:/x/y") == {"text": {"model": "local-dir:/x/y"}}
    assert parse_override("text.pretrained=") == {"text": {"pretrained": ""}}
    assert load_config(None, ["train.kl_weight=3"]).train.kl_weight == 3.0
    assert load_config(None, ["train.stages=2"]).train.stages == [2]  # a scalar becomes a one-item list
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_override("train.max_steps")


def test_resolved_config_round_trips_through_yaml():
    cfg = load_config(TINY, ["train.max_steps=9"])
    again = config_from_dict(yaml.safe_load(dump_config(cfg)))
    assert again == cfg


# ------------------------------------------------------------------ unknown keys, wrong types
def test_unknown_key_names_closest():
    with pytest.raises(ConfigError, match=r"unknown config key 'train\.batchsize'.*'train\.batch_size'"):
        load_config(TINY, ["train.batchsize=3"])
    with pytest.raises(ConfigError, match="'model.gf'"):
        load_config(None, ["model.gff=3"])
    with pytest.raises(ConfigError, match="unknown config key 'trian'.*'train'"):
        load_config(None, ["trian.max_steps=3"])


def test_unknown_key_in_preset(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  max_step: 3\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="'train.max_steps'"):
        load_config(bad)


@pytest.mark.parametrize(
    "override,message",
    [
        ("train.max_steps=abc", "train.max_steps must be an integer, got 'abc'"),
        ("train.max_steps=2.5", "train.max_steps must be an integer"),
        ("train.lr_g=fast", "train.lr_g must be a number"),
        ("train.lr_g=true", "train.lr_g must be a number"),
        ("data.flip=maybe", "data.flip must be true or false"),
        ("data.flip=1", "data.flip must be true or false"),
        ("text.model=[a, b]", "text.model must be a string"),
        ("train=3", "train is a section"),
        ("train.stages=[1, x]", "train.stages must be an integer"),
    ],
)
def test_wrong_types(override, message):
    with pytest.raises(ConfigError) as e:
        load_config(TINY, [override])
    assert message in str(e.value)


def test_preset_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    notmap = tmp_path / "list.yaml"
    notmap.write_text("- 1\n- 2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="mapping of sections"):
        load_config(notmap)
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: [1,\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)


# ------------------------------------------------------------------ out-of-range values
@pytest.mark.parametrize(
    "overrides,message",
    [
        (["train.batch_size=6"], "train.batch_size (6) must be a multiple of train.group_size (4)"),
        (["train.batch_size=4"], "holding at least two groups"),
        (["train.batch_size=1", "train.group_size=1"], "train.batch_size must be >= 2"),
        (["model.res1=24"], "model.res1 must be a power of two in [16, 256], got 24"),
        (["model.res2=16"], "model.res2 must be a power of two above res1=16, got 16"),
        (["model.d1_minibatch=pac"], "model.d1_minibatch must be one of"),
        (["model.mbd_scope=world"], "model.mbd_scope must be 'group' or 'batch'"),
        (["model.d_norm=layer"], "model.d_norm must be 'batch', 'spectral' or 'none'"),
        (["model.d_depth=7"], "model.d_depth must be in [0, 4]"),
        (["model.d_cond=attention"], "model.d_cond must be 'concat' or 'projection'"),
        (["train.loss=wgan"], "train.loss must be 'bce' or 'hinge'"),
        (["train.lr_g=0"], "train.lr_g and train.lr_d must be in (0, 1)"),
        (["train.beta1=1.0"], "train.beta1 and train.beta2 must be in [0, 1)"),
        (["train.ema_decay=1"], "train.ema_decay must be in [0, 1)"),
        (["train.max_steps=0"], "train.max_steps must be >= 1"),
        (["train.stages=[2, 1]"], "train.stages must be [1], [2] or [1, 2]"),
        (["train.mixed_precision=fp16"], "train.mixed_precision must be 'no', 'bf16' or 'auto'"),
        (["train.nan_policy=ignore"], "train.nan_policy must be 'stop' or 'skip'"),
        (["train.mode_seeking=1", "train.group_size=1"], "train.mode_seeking needs train.group_size >= 2"),
        (["train.checkpoint_every=0"], "checkpoint_every"),
        (["train.clip_weight=-1"], "train.clip_weight must be >= 0"),
        (["train.clip_jitter=0.8"], "train.clip_jitter must be in [0, 0.5], got 0.8"),
        (["train.clip_blur=-1"], "train.clip_blur must be in [0, 4] (pixels), got -1"),
        (["train.hard_negatives=1.5"], "train.hard_negatives must be in [0, 1] (a share of groups), got 1.5"),
        (["text.train_group_by=[colour, hue]"], "text.train_group_by must name attributes among"),
        (["text.train_group_by=[colour]", "data.name=folder", "data.path=."], "text.train_group_by needs the attribute"),
        (["data.name=imagenet"], "data.name must be 'shapes' or 'folder', got 'imagenet'"),
        (["data.name=folder"], "data.name=folder needs data.path="),
        (["text.model="], "text.model must name an open_clip model"),
        (["train.group_size=0"], "train.group_size must be >= 1"),
        (["model.gf=12800"], "model.gf and model.df must be in [1, 1024]"),
        (["model.z_dim=0"], "model.z_dim must be in [1, 4096], got 0"),
        (["model.cond_dim=100000"], "model.cond_dim must be in [1, 4096], got 100000"),
        (["model.res_blocks=400"], "model.res_blocks must be in [0, 64]"),
        (["model.mbd_kernels=0"], "model.mbd_kernels must be in [1, 4096]"),
        (["train.batch_size=1000000", "train.group_size=1"], "train.batch_size must be <= 65536"),
        (["data.size=200000000"], "data.size and data.test_size of the built-in shapes data set must be <= 2,000,000"),
        (["train.batch_size=6", "train.group_size=3", "model.d1_minibatch=mbstd", "model.mbd_scope=batch"],
         "train.batch_size (6) must be a multiple of model.mbstd_group (4)"),
    ],
)
def test_out_of_range_values(overrides, message):
    with pytest.raises(ConfigError) as e:
        load_config(TINY, overrides)
    assert message in str(e.value)


def test_missing_data_path():
    with pytest.raises(ConfigError, match="data.path '/nope' does not exist"):
        load_config(TINY, ["data.name=folder", "data.path=/nope"])


def test_existing_data_path_is_accepted(tmp_path):
    cfg = load_config(TINY, ["data.name=folder", f"data.path={tmp_path}"])
    assert cfg.data.path == str(tmp_path)


# ------------------------------------------------------------------ the command line
def test_dry_run_prints_resolved_config(capsys, tmp_path):
    out_dir = tmp_path / "run"
    rc = train_main(["--config", str(TINY), "--dry-run", "--output-dir", str(out_dir), "train.max_steps=7"])
    assert rc == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["train"]["max_steps"] == 7  # override
    assert printed["model"]["gf"] == 8  # preset
    assert printed["train"]["lr_g"] == 2e-4  # default
    assert set(printed) == {"data", "text", "model", "train"}
    assert not out_dir.exists()  # nothing is written


def test_dry_run_relative_config(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert train_main(["--config", "configs/shapes-tiny.yaml", "--dry-run", "train.max_steps=7"]) == 0
    assert "max_steps: 7" in capsys.readouterr().out


def test_cli_reports_config_errors(capsys, tmp_path):
    rc = train_main(["--config", str(TINY), "--output-dir", str(tmp_path / "run"), "train.batchsize=3"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "train.batch_size" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
    rc = train_main(["--config", str(TINY), "--data", "/nope", "--dry-run"])
    assert rc == 2
    assert "/nope" in capsys.readouterr().err


def test_cli_requires_output_dir(capsys):
    assert train_main(["--config", str(TINY)]) == 2
    assert "--output-dir" in capsys.readouterr().err


# ------------------------------------------------------------------ text embedding size vs generator
def test_text_dim_mismatch_raises_pipeline_error():
    from stackgan.models.stage1 import Stage1Generator
    from stackgan.models.stage2 import Stage2Generator
    from stackgan.pipeline import PipelineError, StackGANPipeline

    pipe = make_tiny_pipeline(stage2=True)
    enc = pipe.text_encoder
    wrong = enc.dim + 5
    with pytest.raises(PipelineError, match=rf"stage I expects {wrong}-d text embeddings.*gives {enc.dim}-d"):
        StackGANPipeline(enc, Stage1Generator(wrong, z_dim=4, cond_dim=4, gf=2, resolution=16))
    g2 = Stage2Generator(wrong, cond_dim=4, gf=2, res_blocks=0, res_in=16, resolution=32)
    with pytest.raises(PipelineError, match=rf"stage II expects {wrong}-d"):
        StackGANPipeline(enc, pipe.stage1, g2)
    g2 = Stage2Generator(enc.dim, cond_dim=4, gf=2, res_blocks=0, res_in=32, resolution=64)
    with pytest.raises(PipelineError, match="stage II takes 32px images but stage I makes 16px"):
        StackGANPipeline(enc, pipe.stage1, g2)


def test_init_pipeline_text_dim_differs_from_the_encoder(tiny_pipeline_dir, tmp_path):
    """Fine-tuning a pipeline (64-d text) with another encoder (shapes-clip-small: 128-d) fails clearly."""
    from stackgan.training.loop import train

    cfg = load_config(TINY, ["data.size=20", "data.test_size=10", "text.model=shapes-clip-small", "text.train_steps=0",
                             "train.stages=[1]", "train.max_steps=1"])
    with pytest.raises(ConfigError, match=r"trained on 64-d text embeddings but the text encoder .* gives 128-d\. "
                                          r"Pass --reinit-text-projection"):
        train(cfg, tmp_path / "run", init_from=str(tiny_pipeline_dir))


@pytest.mark.parametrize("preset", ["cub", "flowers", "coco", "finetune", "shapes"])
def test_every_preset_resolves(preset, tmp_path):
    """Each shipped preset loads and validates (user-data presets with a data path given)."""
    overrides = [] if preset == "shapes" else [f"data.path={tmp_path}"]
    cfg = load_config(ROOT / "configs" / f"{preset}.yaml", overrides)
    if preset in ("cub", "flowers", "coco"):
        assert (cfg.model.res1, cfg.model.res2) == (64, 256) and cfg.data.format == preset


def test_shape_attribute_names_match_the_data_set():
    from stackgan.config import SHAPE_ATTRIBUTES
    from stackgan.data.shapes import ATTRIBUTES

    assert SHAPE_ATTRIBUTES == tuple(ATTRIBUTES)
