"""Discriminator-side options: the contrastive caption loss, the R1 penalty, unnormalised and deeper discriminators."""

from __future__ import annotations

import pytest
import torch
from test_training import metrics, small_cfg, stage1_cfg

from stackgan.config import ConfigError
from stackgan.models.stage1 import Stage1Discriminator
from stackgan.models.stage2 import Stage2Discriminator
from stackgan.training import loop
from stackgan.training.data import GroupSampler
from stackgan.training.loop import train
from stackgan.training.losses import r1_penalty


def _projection_d(**kw) -> Stage1Discriminator:
    torch.manual_seed(0)
    return Stage1Discriminator(12, 8, df=8, resolution=16, minibatch="mbstd", norm="spectral", cond="projection", **kw)


# ------------------------------------------------------------------ contrastive logits
def test_contrast_logits_are_the_projection_terms_of_every_pair():
    D = _projection_d().eval()
    real, text = torch.rand(8, 3, 16, 16) * 2 - 1, torch.randn(8, 12)
    others = torch.randn(5, 12)
    with torch.no_grad():
        out = D(text, real=real, group=4, contrast_text=torch.cat([text, others]))
        swapped = D(others[:1].expand(8, -1), real=real, group=4)
    c = out["real_contrast"]
    assert c.shape == (8, 13)
    # logit(x_n, t) = w . phi(x_n) + <embed(t), phi(x_n)>: the first term does not depend on the caption,
    # so the difference between two captions' logits is the difference of their contrast columns.
    assert torch.allclose(out["real"] - swapped["real"], c.diagonal()[:8] - c[:, 8], atol=1e-5)


def test_contrast_logits_need_the_projection_head():
    torch.manual_seed(0)
    D = Stage1Discriminator(12, 8, df=8, resolution=16, minibatch="none", norm="batch", cond="concat")
    with pytest.raises(ValueError, match="projection head"):
        D(torch.randn(4, 12), real=torch.zeros(4, 3, 16, 16), contrast_text=torch.randn(2, 12))


def test_contrastive_trains_both_stages_and_logs_the_accuracies(tmp_path):
    run = tmp_path / "run"
    train(small_cfg("train.max_steps=2", "train.contrastive=1.0", "model.d_cond=projection", "model.d_norm=spectral",
                    "train.loss=hinge"), run)
    rows = metrics(run)
    assert [r["stage"] for r in rows] == [1, 1, 2, 2]
    for r in rows:  # 4 groups per batch: ranking accuracies are shares of 8 images
        assert 0 <= r["contrast_acc_real"] <= 1 and 0 <= r["contrast_acc_fake"] <= 1
        assert (r["contrast_acc_real"] * 8).is_integer()
    train(stage1_cfg("train.max_steps=1", "model.d_cond=projection"), tmp_path / "plain")
    assert "contrast_acc_real" not in metrics(tmp_path / "plain")[0]


def test_contrastive_targets_are_each_images_group_caption(tmp_path, monkeypatch):
    seen = []
    real_ce = loop.F.cross_entropy

    def spy(logits, target, *a, **k):
        seen.append((tuple(logits.shape), target.tolist()))
        return real_ce(logits, target, *a, **k)

    monkeypatch.setattr(loop.F, "cross_entropy", spy)
    train(stage1_cfg("train.max_steps=1", "train.contrastive=1.0", "model.d_cond=projection", "train.hard_negatives=1.0"),
          tmp_path / "run")
    # D on the reals, then G on the fakes: 8 images, 4 group captions + one hard negative per group found.
    assert len(seen) == 2
    (shape_d, own_d), (shape_g, own_g) = seen
    assert own_d == own_g == [0, 0, 1, 1, 2, 2, 3, 3]
    assert shape_d == shape_g and shape_d[0] == 8 and 5 <= shape_d[1] <= 8


def test_contrastive_hard_negatives_are_the_mismatched_captions(tmp_path, monkeypatch):
    chosen, columns = [], []
    real_mismatched = GroupSampler.mismatched

    def spy_mismatched(self, *args, **kwargs):
        out = real_mismatched(self, *args, **kwargs)
        chosen.append(out)
        return out

    real_forward = Stage1Discriminator.forward

    def spy_forward(self, text, *args, contrast_text=None, **kwargs):
        if contrast_text is not None:
            columns.append((text, contrast_text))
        return real_forward(self, text, *args, contrast_text=contrast_text, **kwargs)

    monkeypatch.setattr(GroupSampler, "mismatched", spy_mismatched)
    monkeypatch.setattr(Stage1Discriminator, "forward", spy_forward)
    train(stage1_cfg("train.max_steps=1", "train.contrastive=1.0", "model.d_cond=projection", "train.hard_negatives=1.0"),
          tmp_path / "run")
    (text, cols), _ = columns  # D step, then G step with the same columns
    ids = [i for i in chosen[0] if i >= 0]
    assert torch.equal(cols[:4], text[::2])  # the 4 groups' captions first
    assert cols.shape[0] == 4 + len(ids)


def test_contrastive_needs_the_projection_discriminator(tmp_path):
    with pytest.raises(ConfigError, match="train.contrastive needs the projection discriminator"):
        train(stage1_cfg("train.max_steps=1", "train.contrastive=1.0", "model.d_cond=concat"), tmp_path / "run")
    with pytest.raises(ConfigError, match="train.contrastive must be >= 0"):
        train(stage1_cfg("train.max_steps=1", "train.contrastive=-1", "model.d_cond=projection"), tmp_path / "run")


# ------------------------------------------------------------------ R1
def test_r1_penalty_of_a_linear_critic_is_half_its_squared_weight_norm():
    w = torch.randn(3, 4, 4, requires_grad=True)
    x = torch.randn(5, 3, 4, 4, requires_grad=True)
    logits = (x * w).sum(dim=(1, 2, 3))  # d logit_n / d x_n = w for every n
    p = r1_penalty(logits, x)
    assert torch.allclose(p, w.pow(2).sum() / 2)
    (g,) = torch.autograd.grad(p, w)  # kept in the graph: the penalty trains the critic
    assert torch.allclose(g, w)


def test_r1_every_applies_the_penalty_on_its_steps_only(tmp_path, monkeypatch):
    calls = []
    real_r1 = loop.r1_penalty

    def spy(logits, real):
        calls.append(real.requires_grad)
        return real_r1(logits, real)

    monkeypatch.setattr(loop, "r1_penalty", spy)
    train(stage1_cfg("train.max_steps=5", "train.r1_gamma=1.0", "train.r1_every=2"), tmp_path / "run")
    assert calls == [True, True, True]  # steps 0, 2, 4
    assert all(torch.isfinite(torch.tensor(r["loss_d"])) for r in metrics(tmp_path / "run"))


@pytest.mark.parametrize("override, message", [
    ("train.r1_gamma=-0.1", "train.r1_gamma must be >= 0"),
    ("train.r1_every=0", "train.r1_every must be >= 1"),
])  # fmt: skip
def test_r1_settings_out_of_range(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        train(stage1_cfg("train.max_steps=1", override), tmp_path / "run")


# ------------------------------------------------------------------ unnormalised discriminators
@pytest.mark.parametrize("cls, kw", [
    (Stage1Discriminator, {"resolution": 16}),
    (Stage2Discriminator, {"resolution": 32}),
])  # fmt: skip
def test_d_norm_none_has_neither_batch_nor_spectral_norm(cls, kw):
    D = cls(12, 8, df=8, minibatch="mbstd", norm="none", cond="projection", **kw)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in D.modules())
    assert not any(hasattr(m, "parametrizations") for m in D.modules())
    out = D(torch.randn(4, 12), real=torch.rand(4, 3, kw["resolution"], kw["resolution"]), group=2)
    assert out["real"].shape == (4,)


def test_d_norm_none_trains(tmp_path):
    train(small_cfg("train.max_steps=1", "model.d_norm=none", "train.r1_gamma=0.5", "train.r1_every=1"), tmp_path / "run")
    assert all(torch.isfinite(torch.tensor(r["loss_d"])) for r in metrics(tmp_path / "run"))


# ------------------------------------------------------------------ deeper discriminator encoders
@pytest.mark.parametrize("cls, res, norm", [
    (Stage1Discriminator, 16, "spectral"),
    (Stage1Discriminator, 32, "batch"),
    (Stage2Discriminator, 32, "spectral"),
])  # fmt: skip
def test_d_depth_adds_stride1_convs_at_every_scale(cls, res, norm):
    """depth k: k extra conv3x3 (stride 1) after each stride-2 block; the same 4x4 output and logit shapes."""
    def convs(D):
        return [m for m in D.encoder.modules() if isinstance(m, torch.nn.Conv2d)]

    torch.manual_seed(0)
    flat = cls(12, 8, df=4, resolution=res, minibatch="mbstd", norm=norm, cond="projection")
    deep = cls(12, 8, df=4, resolution=res, minibatch="mbstd", norm=norm, cond="projection", depth=2)
    n_scales = sum(1 for m in convs(flat) if m.stride == (2, 2))
    assert n_scales == res.bit_length() - 3  # down to 4x4
    stride1 = [m for m in convs(deep) if m.stride == (1, 1) and m.kernel_size == (3, 3)]
    assert len(stride1) == len([m for m in convs(flat) if m.stride == (1, 1)]) + 2 * n_scales
    assert all(m.in_channels == m.out_channels for m in stride1[: 2 * n_scales])
    x = torch.rand(4, 3, res, res) * 2 - 1
    assert deep.encoder(x).shape == flat.encoder(x).shape
    out = deep(torch.randn(4, 12), real=x, fake=x.flip(0), wrong_text=torch.randn(4, 12), group=2)
    assert all(v.shape == (4,) and torch.isfinite(v).all() for v in out.values())
    if norm == "spectral":
        assert all(hasattr(m, "parametrizations") for m in stride1)


@pytest.mark.parametrize("factor", [2, 4])
def test_d1_upsample_reads_enlarged_images_through_more_strided_blocks(factor):
    def strided(D):
        return [m for m in D.encoder.modules() if isinstance(m, torch.nn.Conv2d) and m.stride == (2, 2)]

    torch.manual_seed(0)
    plain = Stage1Discriminator(12, 8, df=4, resolution=16, minibatch="mbstd", norm="spectral", cond="projection")
    big = Stage1Discriminator(12, 8, df=4, resolution=16, minibatch="mbstd", norm="spectral", cond="projection",
                              upsample=factor)
    assert len(strided(big)) == len(strided(plain)) + factor.bit_length() - 1
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    assert big.encoder(x).shape[2:] == plain.encoder(x).shape[2:] == (4, 4)
    # Nearest-neighbour enlargement: the first strided conv sees each input pixel as a factor x factor block.
    assert torch.equal(big.encoder[0](x), x.repeat_interleave(factor, 2).repeat_interleave(factor, 3))
    x.requires_grad_(True)
    out = big(torch.randn(4, 12), real=x, group=2)
    out["real"].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # the generator gets gradients through it
    with pytest.raises(ValueError, match="upsample must be 1, 2 or 4"):
        Stage1Discriminator(12, 8, df=4, resolution=16, upsample=3)


def test_d1_upsample_is_checked_and_trains(tmp_path):
    with pytest.raises(ConfigError, match="model.d1_upsample must be 1, 2 or 4, got 3"):
        small_cfg("model.d1_upsample=3")
    train(stage1_cfg("train.max_steps=2", "model.d1_upsample=2"), tmp_path / "run")
    assert all(torch.isfinite(torch.tensor(r["loss_d"])) for r in metrics(tmp_path / "run"))


def test_d_depth_trains_and_resume_refuses_another_depth(tmp_path):
    train(small_cfg("train.max_steps=2", "model.d_depth=1"), tmp_path / "run")
    assert all(torch.isfinite(torch.tensor(r["loss_d"])) for r in metrics(tmp_path / "run"))
    with pytest.raises(Exception, match="d_depth"):
        train(small_cfg("train.max_steps=3", "model.d_depth=0"), tmp_path / "run", resume="latest")
