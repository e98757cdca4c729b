"""Stage II's skip option (`model.g2_skip`): the output is the enlarged stage I image plus a learned
correction in tanh's logit space, starting at zero. Starts as the enlarged input, learns, survives
the inference rewrites, saves and loads, trains, and is part of the architecture a resume checks."""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F
from test_optimize import _trained_bn
from test_training import small_cfg

from stackgan.models.stage1 import Stage1Generator
from stackgan.models.stage2 import Stage2Generator
from stackgan.optimize import bf16_available, optimize_generator
from stackgan.pipeline import StackGANPipeline
from stackgan.text.encoder import load_text_encoder
from stackgan.training.loop import build_models, train


def _g2(skip: bool = True) -> Stage2Generator:
    torch.manual_seed(0)
    return Stage2Generator(32, cond_dim=8, gf=4, res_blocks=1, res_in=16, resolution=32, skip=skip).eval()


def _inputs(n: int = 6):
    g = torch.Generator().manual_seed(1)
    low = torch.rand(n, 3, 16, 16, generator=g) * 1.8 - 0.9
    return low, torch.randn(n, 32, generator=g), torch.randn(n, 8, generator=g)


def _randomise(g: Stage2Generator, scale: float = 0.3) -> None:
    with torch.no_grad():
        g.to_rgb[0].weight.normal_(0, scale)


def _enlarged(low: torch.Tensor, side: int = 32) -> torch.Tensor:
    return F.interpolate(low, size=(side, side), mode="bilinear", align_corners=False)


def test_untrained_skip_returns_the_enlarged_stage1_image():
    low, text, eps = _inputs()
    with torch.no_grad():
        out = _g2()(low, text, eps)[0]
        plain = _g2(skip=False)(low, text, eps)[0]
    assert torch.allclose(out, _enlarged(low), atol=1e-5)
    assert (plain - _enlarged(low)).abs().mean() > 0.1  # StackGAN's stage II draws its own image
    # Saturated stage I pixels stay finite: atanh sees them clamped.
    saturated = torch.ones(2, 3, 16, 16)
    with torch.no_grad():
        out = _g2()(saturated, text[:2], eps[:2])[0]
    assert torch.isfinite(out).all() and out.min() > 0.99


def test_the_correction_gets_a_gradient_and_reads_the_condition():
    g = _g2().train()
    low, text, eps = _inputs()
    g(low, text, eps)[0].mean().backward()
    assert g.to_rgb[0].weight.grad.abs().sum() > 0  # zero-initialised, it still learns
    g = _g2()
    _randomise(g)
    _trained_bn(g, low, text, eps)
    with torch.no_grad():
        a = g(low, text, eps)[0]
        b = g(low, text.flip(0), eps.flip(0))[0]
    assert (a - _enlarged(low)).abs().mean() > 1e-2
    assert (a - b).abs().mean() > 1e-3


def test_optimised_copy_matches_the_plain_forward():
    g = _g2()
    _randomise(g)
    low, text, eps = _inputs()
    _trained_bn(g, low, text, eps)
    fast = optimize_generator(g, fold_bn=True, deconv=True, channels_last=True)
    with torch.no_grad():
        ref = g(low, text, eps)[0]
        assert torch.allclose(ref, fast(low, text, eps)[0], atol=1e-5)
        if bf16_available(torch.device("cpu")):
            half = optimize_generator(g, bf16_weights=True)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                got = half(low, text, eps)[0]
            assert got.dtype == torch.float32  # the sum with the enlarged input is done in float32
            assert (got - ref).abs().mean() < 3 / 127.5


def test_pipeline_round_trip_keeps_the_skip(tmp_path):
    enc = load_text_encoder("shapes-clip-tiny")
    torch.manual_seed(0)
    g1 = Stage1Generator(enc.dim, z_dim=8, cond_dim=8, gf=4, resolution=16)
    g2 = Stage2Generator(enc.dim, cond_dim=8, gf=4, res_blocks=1, res_in=16, resolution=32, skip=True)
    _randomise(g2, 0.05)
    pipe = StackGANPipeline(enc, g1, g2, {"model_id": "tiny-skip"})
    pipe.save_pretrained(tmp_path / "p")
    assert json.loads((tmp_path / "p" / "stage2" / "config.json").read_text())["args"]["skip"] == 1
    again = StackGANPipeline.from_pretrained(tmp_path / "p")
    assert again.stage2.skip
    a = pipe("a red circle", num_images_per_prompt=3, seed=2, output_type="pt").images
    b = again("a red circle", num_images_per_prompt=3, seed=2, output_type="pt").images
    assert torch.equal(a, b)
    # A stage II without the option writes no "skip" key, so its config.json is what it was before.
    plain = Stage2Generator(enc.dim, cond_dim=8, gf=4, res_blocks=1, res_in=16, resolution=32)
    StackGANPipeline(enc, g1, plain, {}).save_pretrained(tmp_path / "q")
    assert "skip" not in json.loads((tmp_path / "q" / "stage2" / "config.json").read_text())["args"]


def test_config_switch_builds_it_and_a_short_run_trains_it(tmp_path):
    cfg = small_cfg("train.max_steps=2", "model.g2_skip=true")
    assert build_models(cfg, 2, 32)[0].skip and not build_models(small_cfg(), 2, 32)[0].skip
    pipe = StackGANPipeline.from_pretrained(train(cfg, tmp_path / "run"))
    assert pipe.stage2.skip
    assert pipe.stage2.to_rgb[0].weight.abs().sum() > 0  # two steps moved the correction off zero


def test_fine_tuning_keeps_the_inits_stage2_kind(tiny_pipeline_dir, tmp_path):
    """A trained stage II without the skip computes another function: fine-tuning it keeps it as it
    is (and says so); on a stage-I-only init, the switch builds the new stage II with the skip."""
    tuned = train(small_cfg("train.stages=[2]", "train.max_steps=1", "model.g2_skip=true"), tmp_path / "ft",
                  init_from=str(tiny_pipeline_dir))
    assert not StackGANPipeline.from_pretrained(tuned).stage2.skip
    assert "g2_skip=False" in (tmp_path / "ft" / "train.log").read_text(encoding="utf-8")
    stage1_only = train(small_cfg("train.stages=[1]", "train.max_steps=1"), tmp_path / "s1")
    new = train(small_cfg("train.stages=[2]", "train.max_steps=1", "model.g2_skip=true"), tmp_path / "s2",
                init_from=str(stage1_only), freeze_stage1=True)
    assert StackGANPipeline.from_pretrained(new).stage2.skip
