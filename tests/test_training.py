"""Training: a two-step run, save/load, resume (step count, bitwise after a crash, wrong
architecture), NaN handling, and the deterministic grouped batches."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import ROOT, make_tiny_pipeline
from safetensors.torch import load_file

from stackgan.config import dump_config, load_config
from stackgan.pipeline import StackGANPipeline
from stackgan.training import loop
from stackgan.training.checkpoint import CheckpointError, find_checkpoint
from stackgan.training.data import CaptionTable, GroupSampler
from stackgan.training.loop import TrainingDiverged, train

TINY = ROOT / "configs" / "shapes-tiny.yaml"
# Smaller than the tiny preset: 200 images, batches of 4 captions x 2 samples, a 2 x 2 grid.
SMALL = [
    "data.size=200", "data.test_size=100", "text.train_steps=0",
    "train.batch_size=8", "train.group_size=2", "train.grid_captions=2", "train.grid_samples=2",
    "train.log_every=1", "train.snapshot_every=100", "train.checkpoint_every=2", "train.keep_checkpoints=3",
]  # fmt: skip


def small_cfg(*overrides: str):
    return load_config(TINY, [*SMALL, *overrides])


def stage1_cfg(*overrides: str):
    return small_cfg("train.stages=[1]", *overrides)


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]


def latest_meta(run: Path) -> dict:
    return find_checkpoint(run, "latest")["meta"]


def weights(folder: Path, name: str = "model.safetensors") -> dict[str, torch.Tensor]:
    return load_file(str(folder / name))


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


class SimulatedCrash(Exception):
    pass


# ------------------------------------------------------------------ a two-step run, both stages
def test_two_step_run_writes_a_complete_run_folder(tmp_path):
    cfg = small_cfg("train.max_steps=2", "text.train_steps=2", "text.train_batch_size=16")
    run = tmp_path / "run"
    pipeline_dir = train(cfg, run)

    assert pipeline_dir == run / "pipeline"
    assert yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8")) == yaml.safe_load(dump_config(cfg))
    log_text = (run / "train.log").read_text(encoding="utf-8")
    assert "1 process(es)" in log_text and "stage 2 step 2:" in log_text
    rows = metrics(run)
    assert [(r["stage"], r["step"]) for r in rows] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert all(isinstance(r["loss_d"], float) for r in rows)
    samples = sorted(p.name for p in (run / "samples").glob("*.png"))
    assert samples == ["stage1-start.png", "stage1-step0000002.png", "stage2-start.png", "stage2-step0000002.png"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["stage1-step00000002", "stage2-step00000002"]
    assert latest_meta(run)["stage"] == 2 and latest_meta(run)["step"] == 2
    retrieval = json.loads((run / "text_encoder" / "retrieval.json").read_text(encoding="utf-8"))
    assert "r_at_1" in retrieval and "zero_shot" in retrieval["attributes"]["shape"]
    assert (run / "losses.png").exists() and list((run / "logs").rglob("events.out.tfevents.*"))

    pipe = StackGANPipeline.from_pretrained(pipeline_dir)
    assert pipe.stage2 is not None and pipe.resolution == cfg.model.res2
    out = pipe(["a red circle", "a blue star"], num_images_per_prompt=2, seed=0, output_type="pt")
    assert out.images.shape == (4, 3, cfg.model.res2, cfg.model.res2) and out.images.dtype == torch.uint8
    assert out.stage1_images.shape == (4, 3, cfg.model.res1, cfg.model.res1)
    assert (pipeline_dir / "training_config.yaml").exists()


# ------------------------------------------------------------------ save / load
def test_save_load_round_trip_identical_outputs(tmp_path):
    pipe = make_tiny_pipeline(seed=4)
    pipe.save_pretrained(tmp_path / "p")
    again = StackGANPipeline.from_pretrained(tmp_path / "p")
    prompts = ["a small red circle in the top left", "a star"]
    a = pipe(prompts, num_images_per_prompt=3, seed=11, output_type="pt")
    b = again(prompts, num_images_per_prompt=3, seed=11, output_type="pt")
    assert torch.equal(a.images, b.images) and torch.equal(a.stage1_images, b.stage1_images)
    assert torch.equal(a.images, pipe(prompts, num_images_per_prompt=3, seed=11, output_type="pt").images)
    assert not torch.equal(a.images, pipe(prompts, num_images_per_prompt=3, seed=12, output_type="pt").images)
    for name in ("stage1", "stage2"):
        assert_same_weights(pipe.__dict__[name].state_dict(), again.__dict__[name].state_dict())


# ------------------------------------------------------------------ resume
@pytest.fixture(scope="module")
def stage1_runs(tmp_path_factory):
    """Stage I runs, shared by the resume tests:
    full: 4 steps in one go;  ext: 2 steps, then extended to 4 with resume="latest"."""
    root = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STACKGAN_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        train(stage1_cfg("train.max_steps=4"), root / "full")
        train(stage1_cfg("train.max_steps=2"), root / "ext")
        train(stage1_cfg("train.max_steps=4"), root / "ext", resume="latest")
    return root


def test_resume_continues_the_step_count(stage1_runs):
    run = stage1_runs / "ext"
    assert latest_meta(run)["step"] == 4 and latest_meta(run)["stage"] == 1
    assert [r["step"] for r in metrics(run)] == [1, 2, 3, 4]  # steps 3-4 ran once, after 1-2
    log_text = (run / "train.log").read_text(encoding="utf-8")
    assert "resumed stage 1 at step 2" in log_text
    for step in (1, 2, 3, 4):
        assert log_text.count(f"stage 1 step {step}:") == 1, step
    # Another run's messages never leak into this run's log.
    assert str(stage1_runs / "full") not in log_text
    assert str(run) not in (stage1_runs / "full" / "train.log").read_text(encoding="utf-8")


def test_extended_run_matches_uninterrupted_run_bitwise(stage1_runs):
    full, ext = stage1_runs / "full" / "checkpoints", stage1_runs / "ext" / "checkpoints"
    # G trains in train mode (batch statistics) from step 1: its batch norms counted all 4 steps.
    assert weights(full / "stage1-step00000004")["fc.1.num_batches_tracked"].item() == 4
    for name in ("model.safetensors", "model_1.safetensors", "ema.safetensors"):  # G, D, EMA
        assert_same_weights(weights(full / "stage1-step00000004", name), weights(ext / "stage1-step00000004", name))


def test_resume_after_crash_gives_the_same_weights(stage1_runs, tmp_path, monkeypatch):
    run = tmp_path / "crash"
    calls = {"n": 0}
    real_d_loss = loop.d_loss

    def crashing_d_loss(logits, kind="bce"):
        calls["n"] += 1
        if calls["n"] == 4:  # in the 4th step: after the checkpoint at step 2 and the (lost) step 3
            raise SimulatedCrash("simulated crash")
        return real_d_loss(logits, kind)

    monkeypatch.setattr(loop, "d_loss", crashing_d_loss)
    with pytest.raises(SimulatedCrash):
        train(stage1_cfg("train.max_steps=4"), run)
    assert latest_meta(run)["step"] == 2
    monkeypatch.setattr(loop, "d_loss", real_d_loss)
    train(stage1_cfg("train.max_steps=4"), run, resume="latest")
    assert latest_meta(run)["step"] == 4
    assert [r["step"] for r in metrics(run)] == [1, 2, 3, 3, 4]  # step 3 logged by the crashed run and again
    full = stage1_runs / "full"
    for name in ("model.safetensors", "model_1.safetensors", "ema.safetensors", "optimizer.bin"):
        a = full / "checkpoints" / "stage1-step00000004" / name
        b = run / "checkpoints" / "stage1-step00000004" / name
        if name.endswith(".safetensors"):
            assert_same_weights(weights(a.parent, name), weights(b.parent, name))
        else:
            sa, sb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
            for (ka, va), (kb, vb) in zip(sa["state"].items(), sb["state"].items()):
                assert ka == kb and all(torch.equal(va[k], vb[k]) for k in va)
    assert_same_weights(weights(full / "pipeline" / "stage1"), weights(run / "pipeline" / "stage1"))


@pytest.mark.parametrize("override, named", [
    ("model.gf=4", r"'gf': \(8, 4\)"),
    ("model.g1_film=true", r"'g1_film': \(False, True\)"),
    ("model.g2_skip=true", r"'g2_skip': \(False, True\)"),  # a stage II switch, named on a stage I run too
])
def test_resume_with_another_architecture_names_the_difference(stage1_runs, tmp_path, override, named):
    run = tmp_path / "copy"
    shutil.copytree(stage1_runs / "ext", run)
    before = (run / "config.yaml").read_text(encoding="utf-8")
    with pytest.raises(CheckpointError, match=r"different architecture.*" + named):
        train(stage1_cfg("train.max_steps=6", override), run, resume="latest")
    assert (run / "config.yaml").read_text(encoding="utf-8") == before  # the run's config is left alone


def test_resume_a_checkpoint_written_before_a_model_setting_existed(stage1_runs, tmp_path):
    """A model setting missing from an older checkpoint's config counts as its default, not a difference."""
    import json

    run = tmp_path / "old"
    shutil.copytree(stage1_runs / "ext", run)
    for meta_path in (run / "checkpoints").glob("*/meta.json"):
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        for key in ("d_norm", "d_cond"):
            meta["config"]["model"].pop(key)
        meta_path.write_text(json.dumps(meta), encoding="utf-8")
    train(stage1_cfg("train.max_steps=6"), run, resume="latest")
    assert "stage 1 step 6" in (run / "train.log").read_text(encoding="utf-8")


def test_resume_a_checkpoint_with_a_model_setting_this_version_lacks(stage1_runs, tmp_path):
    """A checkpoint written by a version with a model setting unknown here names that setting."""
    run = tmp_path / "newer"
    shutil.copytree(stage1_runs / "ext", run)
    for meta_path in (run / "checkpoints").glob("*/meta.json"):
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        meta["config"]["model"]["g9_widget"] = 3
        meta_path.write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(CheckpointError, match=r"different architecture \(settings this version of stackgan does not "
                                              r"have: \{'g9_widget': 3\}"):
        train(stage1_cfg("train.max_steps=6"), run, resume="latest")


def test_resume_latest_without_checkpoint(tmp_path, capsys):
    with pytest.raises(CheckpointError, match="no complete checkpoint.*start without --resume"):
        train(stage1_cfg("train.max_steps=2"), tmp_path / "empty", resume="latest")
    from stackgan.cli import train_main

    rc = train_main(["--config", str(TINY), "--output-dir", str(tmp_path / "empty2"), "--resume", "latest", *SMALL])
    assert rc == 2
    err = capsys.readouterr().err
    assert "no complete checkpoint" in err and "Traceback" not in err


def test_half_written_checkpoint_is_never_latest(stage1_runs, tmp_path):
    run = tmp_path / "copy"
    shutil.copytree(stage1_runs / "ext" / "checkpoints", run / "checkpoints")
    tmp = run / "checkpoints" / ".tmp-stage1-step00000006"
    shutil.copytree(run / "checkpoints" / "stage1-step00000004", tmp)
    (tmp / "meta.json").write_text(json.dumps({"stage": 1, "step": 6}), encoding="utf-8")
    broken = run / "checkpoints" / "stage1-step00000008"
    broken.mkdir()
    assert latest_meta(run)["step"] == 4


# ------------------------------------------------------------------ NaN
def _nan_at(monkeypatch, bad_call: int):
    calls = {"n": 0}
    real_d_loss = loop.d_loss

    def nan_d_loss(logits, kind="bce"):
        calls["n"] += 1
        loss = real_d_loss(logits, kind)
        return loss * float("nan") if calls["n"] == bad_call else loss

    monkeypatch.setattr(loop, "d_loss", nan_d_loss)


def test_nan_stops_with_the_step_and_keeps_the_checkpoint(tmp_path, monkeypatch):
    real_d_loss = loop.d_loss
    _nan_at(monkeypatch, bad_call=2)  # the second step
    run = tmp_path / "nan"
    with pytest.raises(TrainingDiverged, match=r"stage 1 step 2: D loss is nan.*last checkpoint is intact"):
        train(stage1_cfg("train.max_steps=3", "train.checkpoint_every=1"), run)
    ckpt = find_checkpoint(run, "latest")
    assert ckpt["meta"]["step"] == 1
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".tmp")]
    for name in ("model.safetensors", "model_1.safetensors", "ema.safetensors"):
        assert all(torch.isfinite(v).all() for v in weights(ckpt["path"], name).values())
    # The intact checkpoint resumes.
    monkeypatch.setattr(loop, "d_loss", real_d_loss)
    train(stage1_cfg("train.max_steps=3", "train.checkpoint_every=1"), run, resume="latest")
    assert latest_meta(run)["step"] == 3


def test_nan_policy_skip_continues(tmp_path, monkeypatch):
    _nan_at(monkeypatch, bad_call=2)
    run = tmp_path / "skip"
    train(stage1_cfg("train.max_steps=3", "train.nan_policy=skip"), run)
    assert latest_meta(run)["step"] == 3
    assert "D step skipped (train.nan_policy=skip)" in (run / "train.log").read_text(encoding="utf-8")
    ckpt = find_checkpoint(run, "latest")["path"]
    for name in ("model.safetensors", "model_1.safetensors", "ema.safetensors"):
        assert all(torch.isfinite(v).all() for v in weights(ckpt, name).values())


# ------------------------------------------------------------------ grouped batches
@pytest.fixture(scope="module")
def shapes_200():
    from stackgan.data.shapes import ShapesDataset

    ds = ShapesDataset(size=200, split="train", seed=0, cache_dir="")
    return ds, CaptionTable.build(ds)


def test_group_sampler_is_a_pure_function_of_seed_stage_step_rank(shapes_200):
    ds, table = shapes_200
    emb = torch.zeros(len(table.texts), 4)
    a = GroupSampler(ds, table, emb, batch_size=12, group_size=3, seed=5)
    b = GroupSampler(ds, table, emb, batch_size=12, group_size=3, seed=5)
    for args in [(1, 0, 0), (1, 7, 0), (2, 7, 1)]:
        assert a.batch(*args) == b.batch(*args)
    b.batch(1, 99, 0)  # drawing other batches first changes nothing
    assert a.batch(1, 7, 0) == b.batch(1, 7, 0)
    batches = {tuple(a.batch(*args)) for args in [(1, 7, 0), (1, 8, 0), (2, 7, 0), (1, 7, 1)]}
    batches.add(tuple(GroupSampler(ds, table, emb, 12, 3, seed=6).batch(1, 7, 0)))
    assert len(batches) == 5
    assert len(a.batch(1, 0, 0)) == 12


def test_group_sampler_groups_match_the_caption(shapes_200):
    ds, table = shapes_200
    g = 4
    sampler = GroupSampler(ds, table, torch.zeros(len(table.texts), 4), batch_size=16, group_size=g, seed=0)
    for step in range(10):
        keys = sampler.batch(1, step)
        for k in range(0, len(keys), g):
            group = keys[k : k + g]
            assert len({cap for _, cap in group}) == 1  # one caption per group
            first, cap = group[0]
            assert cap in table.per_image[first]  # the caption is one of the first image's own
            named = ds.caption_attributes(first)[table.per_image[first].index(cap)]
            assert named
            for i, _ in group:
                attrs = ds.attributes(i).named()
                assert all(attrs[a] == v for a, v in named.items()), (table.texts[cap], attrs)


def test_group_sampler_nearest_neighbours_without_attributes(shapes_200):
    ds, table = shapes_200

    class Plain:  # a data set without attributes: groups come from caption-embedding neighbours
        def __len__(self):
            return len(ds)

        def captions(self, i):
            return ds.captions(i)

    emb = torch.randn(len(table.texts), 8, generator=torch.Generator().manual_seed(0))
    s = GroupSampler(Plain(), table, emb, batch_size=8, group_size=4, seed=0, neighbours=5)
    assert not s.exact
    keys = s.batch(1, 0)
    assert keys == GroupSampler(Plain(), table, emb, 8, 4, seed=0, neighbours=5).batch(1, 0)
    for k in range(0, 8, 4):
        first = keys[k][0]
        near = set(s._matches(first, table.per_image[first].index(keys[k][1])).tolist())
        assert len(near) == 5 and first in near
        assert all(i in near for i, _ in keys[k + 1 : k + 4])


def test_hard_negatives_are_near_captions_that_contradict_the_group(shapes_200):
    ds, table = shapes_200
    emb = torch.randn(len(table.texts), 8, generator=torch.Generator().manual_seed(0))
    s = GroupSampler(ds, table, emb, batch_size=16, group_size=4, seed=0)
    unit = torch.nn.functional.normalize(emb, dim=1)
    found = 0
    for step in range(5):
        caps = [cap for _, cap in s.batch(1, step)][::4]
        assert s.mismatched(caps, 1, step, 0, share=0.0) == [-1] * 4  # share 0: the next group's caption
        wrong = s.mismatched(caps, 1, step, 0, share=1.0)
        assert wrong == GroupSampler(ds, table, emb, 16, 4, seed=0).mismatched(caps, 1, step, 0, share=1.0)
        for own, other in zip(caps, wrong):
            if other < 0:
                continue
            found += 1
            a, b = s.caption_named[own], s.caption_named[other]
            assert any(k in b and b[k] != v for k, v in a.items()), (table.texts[own], table.texts[other])
            # Among the 8 nearest contradicting captions.
            contradicting = [c for c in range(len(table.texts)) if s._contradicts(own, c)]
            sims = unit[contradicting] @ unit[own]
            assert (sims > unit[other] @ unit[own]).sum() < 8
    assert found >= 18
    mixed = [s.mismatched([cap for _, cap in s.batch(1, k)][::4], 1, k, 0, share=0.5) for k in range(20)]
    share = sum(w >= 0 for row in mixed for w in row) / 80
    assert 0.3 < share < 0.7


def test_hard_negatives_without_attributes_come_from_other_images(shapes_200):
    ds, table = shapes_200

    class Plain:
        def __len__(self):
            return len(ds)

        def captions(self, i):
            return ds.captions(i)

    emb = torch.randn(len(table.texts), 8, generator=torch.Generator().manual_seed(1))
    s = GroupSampler(Plain(), table, emb, batch_size=8, group_size=2, seed=0)
    owner = {c: i for i, ids in enumerate(table.per_image) for c in ids}
    caps = [cap for _, cap in s.batch(1, 0)][::2]
    wrong = s.mismatched(caps, 1, 0, 0, share=1.0)
    assert all(w >= 0 and owner[w] != owner[c] for c, w in zip(caps, wrong))


def test_hard_negatives_and_jitter_reach_the_discriminator_and_the_matching_loss(tmp_path, monkeypatch):
    seen = []
    real_mismatched = GroupSampler.mismatched
    real_clip = loop.clip_match_loss

    def spy_mismatched(self, *args, **kwargs):
        out = real_mismatched(self, *args, **kwargs)
        seen.append(("ids", out))
        return out

    def spy_clip(image_emb, text_emb, group, scale, extra=None):
        seen.append(("extra", extra))
        return real_clip(image_emb, text_emb, group, scale, extra=extra)

    real_jitter = loop.jitter

    def spy_jitter(images, strength, generator=None):
        seen.append(("jitter", strength))
        return real_jitter(images, strength, generator)

    monkeypatch.setattr(GroupSampler, "mismatched", spy_mismatched)
    monkeypatch.setattr(loop, "clip_match_loss", spy_clip)
    real_blur = loop.gaussian_blur

    def spy_blur(images, sigma):
        seen.append(("blur", sigma))
        return real_blur(images, sigma)

    monkeypatch.setattr(loop, "jitter", spy_jitter)
    monkeypatch.setattr(loop, "gaussian_blur", spy_blur)
    train(stage1_cfg("train.max_steps=2", "train.hard_negatives=1.0", "train.clip_weight=0.5", "train.clip_jitter=0.1",
                     "train.clip_blur=0.7"), tmp_path / "run")
    ids = [v for k, v in seen if k == "ids"]
    extras = [v for k, v in seen if k == "extra"]
    assert len(ids) == 2 and len(extras) == 2
    assert [v for k, v in seen if k == "jitter"] == [0.1, 0.1]  # fakes jittered before the image tower
    assert [v for k, v in seen if k == "blur"] == [0.7, 0.7]  # and blurred
    for row, extra in zip(ids, extras):
        assert sum(i >= 0 for i in row) >= 3  # 4 groups, nearly all with a hard negative
        assert extra.shape[0] == sum(i >= 0 for i in row)
    assert all(0.5 < r["clip_match"] < 4.0 for r in metrics(tmp_path / "run"))


def test_resume_with_another_text_encoder(stage1_runs, tmp_path):
    run = tmp_path / "copy"
    shutil.copytree(stage1_runs / "ext", run)
    # Without weights the text encoder is random, drawn from train.seed: another seed, another encoder.
    with pytest.raises(CheckpointError, match="trained with the text encoder shapes-clip-tiny@.*resume with the original"):
        train(stage1_cfg("train.max_steps=6", "train.seed=1"), run, resume="latest")


# ------------------------------------------------------------------ text-image matching loss, EMA
def test_clip_weight_adds_the_matching_loss_to_both_stages(tmp_path):
    run = tmp_path / "run"
    train(small_cfg("train.max_steps=2", "train.clip_weight=1.0"), run)
    rows = metrics(run)
    assert [r["stage"] for r in rows] == [1, 1, 2, 2]
    # Chance is log(4 groups) = 1.39; an untrained generator sits near it, and the term is in loss_g.
    assert all(0.5 < r["clip_match"] < 3.0 for r in rows)
    train(small_cfg("train.max_steps=1", "train.stages=[1]"), tmp_path / "plain")
    assert "clip_match" not in metrics(tmp_path / "plain")[0]


@pytest.mark.parametrize("channels_last", [True, False])
def test_mode_seeking_trains_both_stages(tmp_path, channels_last):
    run = tmp_path / "run"
    train(small_cfg("train.max_steps=1", "train.mode_seeking=1.0", f"train.channels_last={channels_last}"), run)
    rows = metrics(run)
    assert [r["stage"] for r in rows] == [1, 2]
    assert all(math.isfinite(r["loss_g"]) for r in rows)


def test_clip_weight_needs_an_image_tower(tmp_path, monkeypatch):
    from stackgan.config import ConfigError
    from stackgan.text.encoder import TextEncoder

    monkeypatch.setattr(TextEncoder, "has_image_tower", property(lambda self: False))
    with pytest.raises(ConfigError, match="train.clip_weight needs a text encoder with an image tower"):
        train(stage1_cfg("train.max_steps=1", "train.clip_weight=0.5"), tmp_path / "run")


def test_d_tower_gives_both_discriminators_the_image_tower_features(tmp_path, monkeypatch):
    from stackgan.text.encoder import TextEncoder

    calls = []
    real_map = TextEncoder.image_map

    def spy(self, images, block=-1, side=4):
        out = real_map(self, images, block, side)
        calls.append((images.shape[-1], block, out.shape, out.requires_grad))
        return out

    monkeypatch.setattr(TextEncoder, "image_map", spy)
    run = tmp_path / "run"
    train(small_cfg("train.max_steps=2", "model.d_tower=true", "model.d_tower_block=0"), run)
    steps = [c for c in calls if c[2][0] == 8]  # the batches (the others: 2-image probes of the channel count)
    # per step: real and fake for D (no gradient), fake for G (with gradient); stage I at 16 px, II at 32
    expected = [(res, 0, grad) for res in (16, 32) for _ in range(2) for grad in (False, False, True)]
    assert [(r, b, g) for r, b, _, g in steps] == expected
    assert all(s[2][2:] == (4, 4) for s in steps)
    d1 = weights(run / "checkpoints" / "stage1-step00000002", "model_1.safetensors")
    assert any(k.startswith("tower_in.") for k in d1)  # the branch's weights are trained and saved
    calls.clear()
    train(stage1_cfg("train.max_steps=1"), tmp_path / "plain")
    assert calls == []


@pytest.mark.parametrize("override, message", [
    ("model.d_tower_block=9", "model.d_tower_block=9 does not name a block of the image tower"),
    ("model.d_tower_block=-9", "model.d_tower_block=-9 does not name a block of the image tower"),
])
def test_d_tower_block_out_of_range(tmp_path, override, message):
    from stackgan.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        train(stage1_cfg("train.max_steps=1", "model.d_tower=true", override), tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_build_models_with_d_tower_needs_the_tower_channels():
    cfg = stage1_cfg("model.d_tower=true")
    with pytest.raises(ValueError, match="model.d_tower needs tower_channels"):
        loop.build_models(cfg, 1, 16)
    _, d = loop.build_models(cfg, 1, 16, tower_channels=5)
    assert d.tower_in is not None
    _, plain = loop.build_models(stage1_cfg(), 1, 16, tower_channels=5)  # ignored when d_tower is off
    assert plain.tower_in is None


def test_d_tower_needs_an_image_tower(tmp_path, monkeypatch):
    from stackgan.config import ConfigError
    from stackgan.text.encoder import TextEncoder

    monkeypatch.setattr(TextEncoder, "has_image_tower", property(lambda self: False))
    with pytest.raises(ConfigError, match="model.d_tower needs a text encoder with an image tower"):
        train(stage1_cfg("train.max_steps=1", "model.d_tower=true"), tmp_path / "run")


def test_channels_last_trains_the_same_model_as_the_default_layout(tmp_path):
    """train.channels_last changes the memory layout only: both stages' exported weights agree
    with a run in the default layout up to float rounding, and save to safetensors."""
    runs = {}
    for flag in ("true", "false"):
        runs[flag] = train(small_cfg("train.max_steps=2", f"train.channels_last={flag}"), tmp_path / flag)
    for stage in ("stage1", "stage2"):
        a, b = weights(runs["true"] / stage), weights(runs["false"] / stage)
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-3, atol=1e-4, msg=f"{stage} {k}")


def test_ema_update_is_a_lerp_of_every_parameter_and_a_copy_of_every_buffer():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))
    ema = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))
    model(torch.randn(8, 4))  # moves the batch-norm running statistics
    before = [p.detach().clone() for p in ema.parameters()]
    loop.ema_update(ema, model, 0.9)
    for b, pe, pm in zip(before, ema.parameters(), model.parameters()):
        torch.testing.assert_close(pe, 0.9 * b + 0.1 * pm.detach())
    for be, bm in zip(ema.buffers(), model.buffers()):
        assert torch.equal(be, bm)


def test_time_limit_ends_each_stage_early_and_training_goes_on(tmp_path, monkeypatch):
    run = tmp_path / "run"
    clock = iter(range(0, 10**6, 30))  # every reading of the clock is 30 s after the last
    monkeypatch.setattr(loop, "_clock", lambda: float(next(clock)))
    # Stage I: 1 minute (read at 0, then after steps 1-3 at 30, 60, 90 > 60: ends at step 3);
    # stage II: 2 minutes (read at 120, then 150 ... 270 > 240: ends at step 5).
    pipe_dir = train(small_cfg("train.max_steps=50", "train.max_minutes=1", "train.stage2_minutes=2"), run)
    rows = metrics(run)
    stage1 = [r["step"] for r in rows if r["stage"] == 1]
    stage2 = [r["step"] for r in rows if r["stage"] == 2]
    assert (stage1, stage2) == ([1, 2, 3], [1, 2, 3, 4, 5])
    log_text = (run / "train.log").read_text(encoding="utf-8")
    assert f"stage 1: time limit of 1 min reached at step {stage1[-1]} of 50" in log_text
    assert f"stage 2: time limit of 2 min reached at step {stage2[-1]} of 50" in log_text
    # Each stage ended as at its last step: checkpoint, saved model, exported pipeline.
    assert latest_meta(run) == {**latest_meta(run), "stage": 2, "step": stage2[-1]}
    assert (run / "stages" / "stage1" / "model.safetensors").exists()
    StackGANPipeline.from_pretrained(pipe_dir)
    # Resuming with the step count it reached finishes at once and exports the same weights.
    before = weights(pipe_dir / "stage2")
    train(small_cfg(f"train.max_steps={stage1[-1]}", f"train.stage2_steps={stage2[-1]}"), run, resume="latest")
    assert_same_weights(before, weights(pipe_dir / "stage2"))


def test_time_limit_must_not_be_negative():
    from stackgan.config import ConfigError

    with pytest.raises(ConfigError, match="max_minutes must be >= 0"):
        small_cfg("train.max_minutes=-1")
