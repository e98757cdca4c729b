"""The optimised inference path (folded batch norm, channels_last, bf16) against the plain one."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_pipeline

from stackgan.models.stage1 import Stage1Generator
from stackgan.models.stage2 import Stage2Generator
from stackgan.optimize import bf16_available, fold_batchnorm
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
