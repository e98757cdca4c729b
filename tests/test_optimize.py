"""The optimised inference path (folded batch norm, channels_last, bf16) against the plain one."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_pipeline

from stackgan.models.stage1 import Stage1Generator
from stackgan.models.stage2 import Stage2Generator
from stackgan.optimize import UpsampleConv, bf16_available, fold_batchnorm, optimize_generator
from stackgan.pipeline import PipelineError


def _trained_bn(g: torch.nn.Module, *inputs) -> torch.nn.Module:
    """Give batch norm non-trivial running statistics, as after training."""
    g.train()
    with torch.no_grad():
        for _ in range(5):
            g(*inputs)
    return g.eval()


def test_fold_batchnorm_matches_eval_forward():
    torch.manual_seed(0)
    g1 = Stage1Generator(32, z_dim=8, cond_dim=8, gf=4, resolution=32)
    text, z, eps = torch.randn(6, 32), torch.randn(6, 8), torch.randn(6, 8)
    _trained_bn(g1, text, z, eps)
    folded = fold_batchnorm(g1)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert torch.allclose(g1(text, z, eps)[0], folded(text, z, eps)[0], atol=1e-5)

    g2 = Stage2Generator(32, cond_dim=8, gf=4, res_blocks=2, res_in=32, resolution=64)
    low = torch.rand(6, 3, 32, 32) * 2 - 1
    _trained_bn(g2, low, text, eps)
    folded2 = fold_batchnorm(g2).to(memory_format=torch.channels_last)
    assert torch.allclose(g2(low, text, eps)[0], folded2(low, text, eps)[0], atol=1e-5)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in g2.modules())  # the original is untouched


def test_pipeline_optimize_fp32_matches_plain():
    pipe = make_tiny_pipeline()
    plain = pipe("a red circle", num_images_per_prompt=4, seed=3, output_type="pt").images
    fast = pipe.optimize(precision="fp32")("a red circle", num_images_per_prompt=4, seed=3, output_type="pt").images
    assert (plain.int() - fast.int()).abs().max() <= 1  # float rounding may move a pixel by one level


@pytest.mark.skipif(not bf16_available(torch.device("cpu")), reason="no native bf16 on this CPU")
def test_pipeline_bf16_close_to_fp32():
    pipe = make_tiny_pipeline()
    ref = pipe("a red circle", num_images_per_prompt=8, seed=3, output_type="pt").images.float()
    got = pipe.optimize(precision="bf16")("a red circle", num_images_per_prompt=8, seed=3, output_type="pt").images.float()
    assert (ref - got).abs().mean() < 3.0  # mean absolute difference under 3/255


def test_bf16_stage2_keeps_stage1_in_float32():
    # stage I decides what is drawn where: under "bf16-stage2" it runs as the float32 optimised path does,
    # to the bit, and only stage II's refinement is rounded to bf16
    args = dict(prompts="a red circle", num_images_per_prompt=8, seed=3, output_type="pt")
    fp32 = make_tiny_pipeline().optimize(precision="fp32")(**args)
    mixed_pipe = make_tiny_pipeline().optimize(precision="bf16-stage2")
    mixed = mixed_pipe(**args)
    both = make_tiny_pipeline().optimize(precision="bf16")(**args)
    assert torch.equal(mixed.stage1_images, fp32.stage1_images)
    assert not torch.equal(both.stage1_images, fp32.stage1_images)  # bf16 in stage I does move pixels
    assert (mixed.images.float() - fp32.images.float()).abs().mean() < 3.0
    g1, g2 = mixed_pipe._fast
    assert next(g1.parameters()).dtype == torch.float32
    assert {m.weight.dtype for m in g2.modules() if isinstance(m, torch.nn.Conv2d)} == {torch.bfloat16}


def test_auto_precision_is_stage2_bf16_where_the_hardware_has_it(monkeypatch):
    import stackgan.optimize

    for native, expected in ((True, "bf16-stage2"), (False, "fp32")):
        monkeypatch.setattr(stackgan.optimize, "bf16_available", lambda device, native=native: native)
        assert make_tiny_pipeline().optimize().precision == expected


def test_optimize_rejects_unknown_precision():
    with pytest.raises(PipelineError, match="precision"):
        make_tiny_pipeline().optimize(precision="fp8")


def test_compiled_pipeline_matches_plain():
    pipe = make_tiny_pipeline()
    plain = pipe("a red circle", num_images_per_prompt=4, seed=3, output_type="pt").images
    pipe.optimize(precision="fp32", compile=True)
    fast = pipe("a red circle", num_images_per_prompt=4, seed=3, output_type="pt").images
    assert (plain.int() - fast.int()).abs().max() <= 1
    assert all(g.failed is None for g in pipe._fast if g is not None), [g.failed for g in pipe._fast if g is not None]


def test_compile_failure_falls_back_to_eager(monkeypatch, caplog):
    def broken_compile(module, **kwargs):
        def run(*args, **kw):
            raise RuntimeError("C++ compiler not found\nmore detail")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    pipe = make_tiny_pipeline()
    plain = pipe("a red circle", num_images_per_prompt=4, seed=3, output_type="pt").images
    pipe.optimize(precision="fp32", compile=True)
    with caplog.at_level("WARNING", logger="stackgan.optimize"):
        fast = pipe("a red circle", num_images_per_prompt=4, seed=3, output_type="pt").images
        again = pipe("a red circle", num_images_per_prompt=4, seed=3, output_type="pt").images
    assert (plain.int() - fast.int()).abs().max() <= 1 and torch.equal(fast, again)
    assert pipe._fast[0].failed == "RuntimeError: C++ compiler not found"
    assert sum("torch.compile failed for Stage1Generator" in r.message for r in caplog.records) == 1


@pytest.mark.parametrize("side", [4, 8, 13])
def test_upsample_conv_is_upsampling_then_conv(side):
    torch.manual_seed(side)
    conv = torch.nn.Conv2d(6, 5, 3, 1, 1, bias=True).double()
    x = torch.randn(3, 6, side, side + 2, dtype=torch.float64)
    ref = conv(torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest"))
    fused = UpsampleConv(conv, min_side=8)
    assert fused.weight.shape == (6, 5, 4, 4)
    # sides under min_side keep the plain pair; the rest run as one transposed convolution
    with torch.no_grad():
        assert torch.allclose(fused(x), ref, atol=1e-12, rtol=0)
        assert torch.allclose(UpsampleConv(conv, min_side=1)(x), ref, atol=1e-12, rtol=0)


def test_upsample_conv_refuses_other_convolutions():
    with pytest.raises(ValueError, match="3x3 convolution with stride 1 and padding 1"):
        UpsampleConv(torch.nn.Conv2d(4, 4, 3, 1, 0))


def test_deconv_upsampling_matches_the_generators():
    torch.manual_seed(0)
    text, z, eps = torch.randn(6, 32), torch.randn(6, 8), torch.randn(6, 8)
    g1 = _trained_bn(Stage1Generator(32, z_dim=8, cond_dim=8, gf=4, resolution=32), text, z, eps)
    low = torch.rand(6, 3, 32, 32) * 2 - 1
    g2 = _trained_bn(Stage2Generator(32, cond_dim=8, gf=4, res_blocks=1, res_in=32, resolution=64), low, text, eps)
    for g, args, n_up in ((g1, (text, z, eps), 3), (g2, (low, text, eps), 3)):
        fast = optimize_generator(g)  # folded batch norm, transposed convolutions, channels_last
        assert sum(isinstance(m, UpsampleConv) for m in fast.modules()) == n_up
        assert not any(isinstance(m, torch.nn.Upsample) for m in fast.modules())
        with torch.no_grad():
            assert torch.allclose(g(*args)[0], fast(*args)[0], atol=1e-5)
        assert any(isinstance(m, torch.nn.Upsample) for m in g.modules())  # the original is untouched


@pytest.mark.skipif(not bf16_available(torch.device("cpu")), reason="no native bf16 on this CPU")
def test_bf16_weights_are_stored_once_for_convolutions_only():
    torch.manual_seed(0)
    text, z, eps = torch.randn(8, 32), torch.randn(8, 8), torch.randn(8, 8)
    g1 = _trained_bn(Stage1Generator(32, z_dim=8, cond_dim=8, gf=4, resolution=32), text, z, eps)
    fast = optimize_generator(g1, bf16_weights=True)
    convs = [m for m in fast.modules() if isinstance(m, (torch.nn.Conv2d, UpsampleConv))]
    assert convs and all(p.dtype == torch.bfloat16 for m in convs for p in m.parameters())
    # the conditioning and the first (linear) layer run outside autocast and stay float32
    assert all(p.dtype == torch.float32 for m in fast.modules() if isinstance(m, torch.nn.Linear) for p in m.parameters())
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        got = fast(text, z, eps)[0].float()
    with torch.no_grad():
        ref = g1(text, z, eps)[0]
    assert (got - ref).abs().mean() < 0.02  # bf16 rounding only (images in [-1, 1])


def test_pipeline_plain_path_is_the_saved_generators():
    pipe = make_tiny_pipeline()
    plain = pipe("a red circle", num_images_per_prompt=4, seed=3, output_type="pt").images
    pipe.optimize(precision="fp32", fold_bn=False, channels_last=False, deconv=False)
    assert pipe._fast is None
    assert torch.equal(plain, pipe("a red circle", num_images_per_prompt=4, seed=3, output_type="pt").images)
