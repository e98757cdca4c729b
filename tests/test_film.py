"""The generators' FiLM option (`model.g1_film`, `model.g2_film`): the condition scales and shifts
every upsampling block after its batch norm. Starts as StackGAN's generator, learns, survives the
inference rewrites, saves and loads, trains, and is part of the architecture a resume checks."""

from __future__ import annotations

import json

import pytest
import torch
from test_optimize import _trained_bn
from test_training import small_cfg, stage1_cfg

from stackgan.models.stage1 import Stage1Generator
from stackgan.models.stage2 import Stage2Generator
from stackgan.optimize import bf16_available, optimize_generator
from stackgan.pipeline import StackGANPipeline
from stackgan.text.encoder import load_text_encoder
from stackgan.training.loop import build_models, train


def _pair(res: int = 32):
    torch.manual_seed(0)
    plain = Stage1Generator(32, z_dim=8, cond_dim=8, gf=4, resolution=res)
    film = Stage1Generator(32, z_dim=8, cond_dim=8, gf=4, resolution=res, film=True)
    missing, unexpected = film.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("film.") for k in missing)
    return plain.eval(), film.eval()


def _randomise_film(g: Stage1Generator, scale: float = 0.3) -> None:
    with torch.no_grad():
        for p in g.film.parameters():
            p.normal_(0, scale)


def _inputs(n: int = 6):
    torch.manual_seed(1)
    return torch.randn(n, 32), torch.randn(n, 8), torch.randn(n, 8)


def test_one_linear_per_upsampling_block_sized_to_its_channels():
    _, g = _pair(32)
    assert len(g.film) == len(g.ups) == 3
    for blk, lin in zip(g.ups, g.film):
        assert lin.in_features == 8 and lin.out_features == 2 * blk[2].num_features
    assert Stage1Generator(32, z_dim=8, cond_dim=8, gf=4, resolution=32).film is None


def test_untrained_modulation_is_stackgans_generator():
    plain, film = _pair()
    text, z, eps = _inputs()
    with torch.no_grad():
        assert torch.equal(plain(text, z, eps)[0], film(text, z, eps)[0])


def test_modulation_makes_the_blocks_read_the_condition():
    plain, film = _pair()
    _randomise_film(film)
    text, z, eps = _inputs()
    with torch.no_grad():
        assert not torch.allclose(film(text, z, eps)[0], plain(text, z, eps)[0], atol=1e-3)
        # Samples with the same first-layer input (z and c) but another sample's c in the blocks
        # come out different: swap the per-block scale and shift between two samples.
        c = film.ca(text, eps)[0]
        h = film.fc(torch.cat([z, c], dim=1)).view(-1, film.ch0, 4, 4)
        outs = []
        for cond in (c, c.flip(0)):
            x = h
            for (up, conv, bn, act), lin in zip(film.ups, film.film):
                gamma, beta = lin(cond).chunk(2, dim=1)
                x = act(bn(conv(up(x))) * (1 + gamma[:, :, None, None]) + beta[:, :, None, None])
            outs.append(film.to_rgb(x))
    assert torch.equal(outs[0], film(text, z, eps)[0])  # the reference loop is the forward
    assert (outs[0] - outs[1]).abs().mean() > 1e-3


def test_gradient_reaches_zero_initialised_modulation():
    """At zero init the per-block scale and shift still get a gradient (else they would never learn)."""
    _, film = _pair()
    film.train()
    text, z, eps = _inputs()
    film(text, z, eps)[0].mean().backward()
    assert all(p.grad.abs().sum() > 0 for p in film.film.parameters())


def test_optimised_copy_matches_the_plain_forward():
    _, film = _pair()
    _randomise_film(film)
    text, z, eps = _inputs()
    _trained_bn(film, text, z, eps)
    fast = optimize_generator(film, fold_bn=True, deconv=True, channels_last=True)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.ups.modules())
    with torch.no_grad():
        assert torch.allclose(film(text, z, eps)[0], fast(text, z, eps)[0], atol=1e-5)
        if bf16_available(torch.device("cpu")):
            half = optimize_generator(film, bf16_weights=True)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                got = half(text, z, eps)[0].float()
            assert (got - film(text, z, eps)[0]).abs().mean() < 3 / 127.5


def test_pipeline_round_trip_keeps_the_modulation(tmp_path):
    enc = load_text_encoder("shapes-clip-tiny")
    torch.manual_seed(0)
    g1 = Stage1Generator(enc.dim, z_dim=8, cond_dim=8, gf=4, resolution=16, film=True)
    _randomise_film(g1)
    pipe = StackGANPipeline(enc, g1, None, {"model_id": "tiny-film"})
    pipe.save_pretrained(tmp_path / "p")
    assert json.loads((tmp_path / "p" / "stage1" / "config.json").read_text())["args"]["film"] == 1
    again = StackGANPipeline.from_pretrained(tmp_path / "p")
    assert again.stage1.film is not None
    a = pipe("a red circle", num_images_per_prompt=3, seed=2, output_type="pt").images
    b = again("a red circle", num_images_per_prompt=3, seed=2, output_type="pt").images
    assert torch.equal(a, b)
    # A model without the option writes no "film" key, so its config.json is what it was before.
    plain = StackGANPipeline(enc, Stage1Generator(enc.dim, z_dim=8, cond_dim=8, gf=4, resolution=16), None, {})
    plain.save_pretrained(tmp_path / "q")
    assert "film" not in json.loads((tmp_path / "q" / "stage1" / "config.json").read_text())["args"]


def test_config_switch_builds_it_and_a_short_run_trains_it(tmp_path):
    cfg = stage1_cfg("train.max_steps=2", "model.g1_film=true")
    g, _ = build_models(cfg, 1, 32)
    assert g.film is not None
    assert build_models(stage1_cfg(), 1, 32)[0].film is None
    pipeline_dir = train(cfg, tmp_path / "run")
    g1 = StackGANPipeline.from_pretrained(pipeline_dir).stage1
    assert g1.film is not None
    assert any(p.abs().sum() > 0 for p in g1.film.parameters())  # two steps moved it off zero


def test_fine_tuning_a_pipeline_without_it_adds_it_zero_initialised(tiny_pipeline_dir, tmp_path):
    """`--init-from P model.g1_film=true` on a P without FiLM: the init's weights, plus modulation at
    zero, so the first step starts from P's own images; with --freeze-stage1 that cannot work."""
    from stackgan.config import ConfigError

    cfg = stage1_cfg("train.max_steps=1", "train.lr_g=1e-12", "model.g1_film=true")  # one step that moves nothing
    pipeline_dir = train(cfg, tmp_path / "run", init_from=str(tiny_pipeline_dir))
    init, tuned = StackGANPipeline.from_pretrained(tiny_pipeline_dir), StackGANPipeline.from_pretrained(pipeline_dir)
    assert init.stage1.film is None and tuned.stage1.film is not None
    assert all(p.abs().max() < 1e-9 for p in tuned.stage1.film.parameters())
    tuned_state = tuned.stage1.state_dict()
    weights = [k for k in init.stage1.state_dict() if "running" not in k and "num_batches" not in k]
    assert all(torch.allclose(init.stage1.state_dict()[k], tuned_state[k], atol=1e-9) for k in weights)
    with pytest.raises(ConfigError, match="g1_film.*--freeze-stage1"):
        train(small_cfg("model.g1_film=true"), tmp_path / "frozen", init_from=str(tiny_pipeline_dir), freeze_stage1=True)


def _stage2_pair():
    torch.manual_seed(0)
    plain = Stage2Generator(32, cond_dim=8, gf=4, res_blocks=1, res_in=16, resolution=32)
    film = Stage2Generator(32, cond_dim=8, gf=4, res_blocks=1, res_in=16, resolution=32, film=True)
    assert len(film.film) == len(film.ups) == 3
    film.load_state_dict(plain.state_dict(), strict=False)
    low = torch.rand(6, 3, 16, 16) * 2 - 1
    text, _, eps = _inputs()
    return plain, film, (low, text, eps)


def test_stage2_untrained_modulation_is_stackgans_then_it_reads_the_condition_and_folds():
    plain, film, inputs = _stage2_pair()
    with torch.no_grad():
        assert torch.equal(plain.eval()(*inputs)[0], film.eval()(*inputs)[0])
    _randomise_film(film)
    _trained_bn(film, *inputs)
    with torch.no_grad():
        ref = film(*inputs)[0]
        assert not torch.allclose(ref, plain(*inputs)[0], atol=1e-3)
        fast = optimize_generator(film, fold_bn=True, deconv=True, channels_last=True)
        assert torch.allclose(ref, fast(*inputs)[0], atol=1e-5)


def test_stage2_switch_trains_saves_and_is_added_to_an_init_without_it(tiny_pipeline_dir, tmp_path):
    pipeline_dir = train(small_cfg("train.max_steps=2", "model.g2_film=true"), tmp_path / "run")
    pipe = StackGANPipeline.from_pretrained(pipeline_dir)
    assert pipe.stage1.film is None and pipe.stage2.film is not None
    assert json.loads((pipeline_dir / "stage2" / "config.json").read_text())["args"]["film"] == 1
    tuned_dir = train(small_cfg("train.stages=[2]", "train.max_steps=1", "model.g2_film=true"), tmp_path / "ft",
                      init_from=str(tiny_pipeline_dir))
    assert StackGANPipeline.from_pretrained(tuned_dir).stage2.film is not None


def test_stage2_switch_on_an_init_without_it_needs_stage2_trained(tiny_pipeline_dir, tmp_path):
    from stackgan.config import ConfigError

    with pytest.raises(ConfigError, match=r"g2_film.*put 2 in train.stages"):
        train(small_cfg("train.stages=[1]", "model.g2_film=true"), tmp_path / "run", init_from=str(tiny_pipeline_dir))
