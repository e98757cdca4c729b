"""The discriminator-attribute check: real images with their own caption against the same caption
with one attribute changed, scored by a run's trained discriminator."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import ROOT
from safetensors.torch import load_file, save_file

from benchmarks.discriminator_attributes import main, measure
from stackgan.config import load_config
from stackgan.data.shapes import ATTRIBUTES
from stackgan.training.loop import train

SMALL = ["data.size=200", "data.test_size=100", "text.train_steps=0", "train.batch_size=8", "train.group_size=2",
         "train.grid_captions=2", "train.grid_samples=2", "train.snapshot_every=100", "train.checkpoint_every=2",
         "train.max_steps=2"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dattr") / "run"
    train(load_config(ROOT / "configs" / "shapes-tiny.yaml", SMALL), folder)
    return folder


def test_every_attribute_is_scored_for_both_stages(run, tmp_path):
    for stage in (1, 2):
        res = measure(run, stage=stage, images=8)
        assert res["stage"] == stage and f"stage{stage}-step" in res["checkpoint"]
        assert set(res["attributes"]) == set(ATTRIBUTES)
        for r in res["attributes"].values():
            assert r["pairs"] == 8 and 0.0 <= r["own_wins"] <= 1.0 and 0.0 <= r["tower_own_wins"] <= 1.0
    main([str(run), "--images", "4", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "discriminator_attributes.json").read_text(encoding="utf-8"))
    assert saved["stage"] == 2  # the latest checkpoint's stage
    assert "| shape | 4 |" in (tmp_path / "discriminator_attributes.md").read_text(encoding="utf-8")


def test_a_discriminator_blind_to_text_scores_no_margin(run, tmp_path):
    import shutil

    blind = tmp_path / "blind"
    shutil.copytree(run, blind)
    ckpt = next((blind / "checkpoints").glob("stage1-step*"))
    state = load_file(str(ckpt / "model_1.safetensors"))
    keys = [k for k in state if k.startswith("head.text_proj")]
    assert keys
    for k in keys:
        state[k] = torch.zeros_like(state[k])  # every caption maps to the same vector
    save_file(state, str(ckpt / "model_1.safetensors"))
    res = measure(blind, stage=1, images=8)
    for r in res["attributes"].values():
        assert r["margin"] == pytest.approx(0.0, abs=1e-6) and r["own_wins"] == 0.0
    assert measure(run, stage=1, images=8)["attributes"]["background"]["margin"] != 0.0


def test_bad_inputs(run, tmp_path, capsys):
    with pytest.raises(SystemExit, match="not a training run folder"):
        measure(tmp_path, images=4)
    with pytest.raises(SystemExit):
        main([str(run), "--images", "0"])
    assert "--images must be >= 1, got 0" in capsys.readouterr().err
    with pytest.raises(Exception, match="no stage 2 checkpoint"):
        stage1_only = tmp_path / "s1"
        (stage1_only / "checkpoints").mkdir(parents=True)
        (stage1_only / "config.yaml").write_text((run / "config.yaml").read_text(encoding="utf-8"), encoding="utf-8")
        measure(stage1_only, stage=2, images=4)


def test_a_run_on_another_data_set_or_without_discriminator_weights(run, tmp_path):
    import shutil

    import yaml

    from stackgan.config import ConfigError

    folder = tmp_path / "folder_run"
    shutil.copytree(run, folder)
    cfg = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8"))
    cfg["data"].update(name="folder", path=str(tmp_path))
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    with pytest.raises(ConfigError, match="needs the attributes of the built-in shapes data set"):
        measure(folder, images=4)
    no_d = tmp_path / "no_d"
    shutil.copytree(run, no_d)
    for f in (no_d / "checkpoints").glob("stage2-step*/model_1.safetensors"):
        f.unlink()
    with pytest.raises(SystemExit, match="holds no discriminator weights"):
        measure(no_d, stage=2, images=4)


def test_a_discriminator_that_reads_the_image_tower(tmp_path):
    folder = tmp_path / "run"
    train(load_config(ROOT / "configs" / "shapes-tiny.yaml", [*SMALL, "train.stages=[1]", "model.d_tower=true"]), folder)
    res = measure(folder, stage=1, images=8)
    assert all(r["pairs"] == 8 and 0.0 <= r["own_wins"] <= 1.0 for r in res["attributes"].values())
