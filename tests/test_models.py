"""Models: shapes, determinism, conditioning augmentation, minibatch layers, D heads, losses."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from stackgan.config import ModelConfig
from stackgan.models.conditioning import ConditioningAugmentation
from stackgan.models.heads import DiscriminatorHead
from stackgan.models.minibatch import MinibatchDiscrimination, MinibatchStdDev
from stackgan.models.stage1 import Stage1Discriminator, Stage1Generator
from stackgan.models.stage2 import Stage2Discriminator, Stage2Generator
from stackgan.training.losses import clip_match_loss, d_loss, g_loss, gaussian_blur, jitter, kl_loss, mode_seeking_loss

TEXT_DIM = 12


def _text(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, TEXT_DIM, generator=torch.Generator().manual_seed(seed))


def _images(n: int, res: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, res, res, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# ------------------------------------------------------------------ shapes
@pytest.mark.parametrize("res", [16, 32])  # the tiny preset's 16 px and a non-paper 32 px
def test_stage1_generator_shapes(res):
    g = Stage1Generator(TEXT_DIM, z_dim=8, cond_dim=6, gf=4, resolution=res)
    img, mu, logvar = g(_text(4), torch.randn(4, 8))
    assert img.shape == (4, 3, res, res)
    assert mu.shape == logvar.shape == (4, 6)
    assert img.min() >= -1 and img.max() <= 1
    with pytest.raises(ValueError, match="z must be"):
        g(_text(4), torch.randn(4, 7))
    with pytest.raises(ValueError, match="text embeddings must be"):
        g(torch.randn(4, TEXT_DIM + 1), torch.randn(4, 8))


@pytest.mark.parametrize("res_in,res", [(16, 32), (16, 64)])  # 2x and a non-paper 4x step
def test_stage2_generator_shapes(res_in, res):
    g = Stage2Generator(TEXT_DIM, cond_dim=6, gf=4, res_blocks=1, res_in=res_in, resolution=res)
    img, mu, logvar = g(_images(2, res_in), _text(2))
    assert img.shape == (2, 3, res, res)
    assert mu.shape == logvar.shape == (2, 6)
    with pytest.raises(ValueError, match="stage I images must be"):
        g(_images(2, res_in * 2), _text(2))


def test_bad_resolutions_raise():
    with pytest.raises(ValueError, match="power of two"):
        Stage1Generator(TEXT_DIM, gf=2, resolution=24)
    with pytest.raises(ValueError, match="at least twice"):
        Stage2Generator(TEXT_DIM, gf=2, res_in=32, resolution=32)
    with pytest.raises(ValueError, match="minibatch must be"):
        Stage1Discriminator(TEXT_DIM, df=2, resolution=16, minibatch="pac")


@pytest.mark.parametrize("minibatch", ["none", "mbd", "mbstd"])
@pytest.mark.parametrize("res", [16, 32])
def test_stage1_discriminator_shapes(minibatch, res):
    d = Stage1Discriminator(TEXT_DIM, cond_dim=6, df=4, resolution=res, minibatch=minibatch, mbd_kernels=5, mbd_dims=3)
    out = d(_text(4), real=_images(4, res), fake=_images(4, res, 2), wrong_text=_text(4, 3), group=2)
    assert set(out) == {"real", "wrong", "fake"}
    assert all(v.shape == (4,) for v in out.values())
    with pytest.raises(ValueError, match="real images must be"):
        d(_text(4), real=_images(3, res))


@pytest.mark.parametrize("res,channels", [(32, 8), (64, 16), (128, 16)])
def test_stage2_discriminator_shapes(res, channels):
    d = Stage2Discriminator(TEXT_DIM, cond_dim=6, df=2, resolution=res, mbd_kernels=5, mbd_dims=3)
    out = d(_text(4), real=_images(4, res), fake=_images(4, res, 2), wrong_text=_text(4, 3), group=2)
    assert set(out) == {"real", "wrong", "fake", "real_uncond", "fake_uncond"}
    assert all(v.shape == (4,) for v in out.values())
    # Channels double per stride-2 block; above 8 df (128 px and up, as StackGAN's 256 px D)
    # 3x3 convs bring them back to 8 df at 4x4.
    assert d.encoder(_images(2, res)).shape == (2, channels, 4, 4)


def test_paper_preset_parameter_count():
    """REFERENCE section 1: G I+II at the paper's widths with 512-d text has 36.3M parameters."""
    m = ModelConfig()
    g1 = Stage1Generator(512, m.z_dim, m.cond_dim, m.gf, m.res1)
    g2 = Stage2Generator(512, m.cond_dim, m.gf, m.res_blocks, m.res1, m.res2)
    total = _n_params(g1) + _n_params(g2)
    assert abs(total - 36.3e6) < 0.1e6, total
    assert abs(_n_params(g1.ca) - 131_328) == 0  # 512 -> 2 * 128 with bias


# ------------------------------------------------------------------ determinism
def test_generators_deterministic_under_seed():
    def build():
        torch.manual_seed(3)
        g1 = Stage1Generator(TEXT_DIM, z_dim=8, cond_dim=6, gf=4, resolution=16).eval()
        g2 = Stage2Generator(TEXT_DIM, cond_dim=6, gf=4, res_blocks=1, res_in=16, resolution=32).eval()
        return g1, g2

    (a1, a2), (b1, b2) = build(), build()
    text, z, eps1, eps2 = _text(3), torch.randn(3, 8), torch.randn(3, 6), torch.randn(3, 6)
    with torch.no_grad():
        la, lb = a1(text, z, eps1)[0], b1(text, z, eps1)[0]
        ha, hb = a2(la, text, eps2)[0], b2(lb, text, eps2)[0]
        assert torch.equal(la, lb) and torch.equal(ha, hb)
        # ... and the same module twice gives the same image; other noise gives another image.
        assert torch.equal(a1(text, z, eps1)[0], la)
        assert not torch.equal(a1(text, torch.randn(3, 8), eps1)[0], la)


# ------------------------------------------------------------------ conditioning augmentation
def test_kl_zero_at_prior_positive_elsewhere():
    zero = torch.zeros(4, 6)
    assert kl_loss(zero, zero).item() == 0.0
    assert kl_loss(torch.full((4, 6), 0.5), zero).item() == pytest.approx(0.5 * 0.25)
    assert kl_loss(zero, torch.ones(4, 6)).item() == pytest.approx(0.5 * (math.e - 2))
    assert kl_loss(zero, -torch.ones(4, 6)).item() == pytest.approx(0.5 * math.exp(-1))
    assert kl_loss(torch.randn(4, 6), torch.randn(4, 6)).item() > 0


def test_conditioning_augmentation_at_prior():
    ca = ConditioningAugmentation(TEXT_DIM, 6)
    torch.nn.init.zeros_(ca.fc.weight)
    torch.nn.init.zeros_(ca.fc.bias)
    eps = torch.randn(4, 6)
    c, mu, logvar = ca(_text(4), eps)
    assert torch.equal(c, eps)  # mu = 0, sigma = 1
    assert kl_loss(mu, logvar).item() == 0.0
    c0, _, _ = ca(_text(4), eps, noise_scale=0.0)
    assert torch.equal(c0, torch.zeros(4, 6))
    with pytest.raises(ValueError, match=r"\[N, 12\]"):
        ca(torch.randn(4, 5))


@pytest.mark.parametrize("make", [lambda: Stage1Generator(128, 8, 32, 4, 16), lambda: Stage2Generator(128, 32, 4, 1, 16, 32)])
def test_generator_condition_starts_with_unit_scale_text(make):
    """Unit-norm text embeddings give mu ~ N(0, 1) per component at init (not StackGAN's 0.02 std,
    which drowned the text in the unit noise) and logvar 0."""
    torch.manual_seed(0)
    ca = make().ca
    text = F.normalize(torch.randn(512, 128), dim=1)
    mu, logvar = ca.fc(text).chunk(2, dim=1)
    assert 0.8 < mu.std().item() < 1.2
    assert torch.equal(logvar, torch.zeros_like(logvar))


# ------------------------------------------------------------------ minibatch discrimination
def test_mbd_identical_rows_give_largest_similarity():
    torch.manual_seed(0)
    g, kernels = 4, 7
    mbd = MinibatchDiscrimination(10, kernels=kernels, dims=3, reduce="sum")
    with torch.no_grad():
        mbd.bias.fill_(0.25)
        same = mbd(torch.randn(1, 10).expand(g, 10).contiguous())
        distinct = mbd(torch.randn(g, 10) * 3)
    # exp(-0) = 1 for each of the g - 1 other samples; the self pair is excluded.
    torch.testing.assert_close(same - 0.25, torch.full((g, kernels), float(g - 1)))
    assert (same >= distinct).all()
    assert (distinct - 0.25 < g - 1).all()
    mean = MinibatchDiscrimination(10, kernels=kernels, dims=3, reduce="mean")
    with torch.no_grad():
        torch.testing.assert_close(mean(torch.ones(g, 10)), torch.ones(g, kernels))


def test_mbd_permutation_equivariant():
    torch.manual_seed(0)
    mbd = MinibatchDiscrimination(10, kernels=5, dims=3)
    x = torch.randn(8, 10)
    with torch.no_grad():
        out = mbd(x)
        perm = torch.randperm(8)
        torch.testing.assert_close(mbd(x[perm]), out[perm])
        # Within groups of 4: permute inside each group, and the groups as blocks.
        grouped = mbd(x, 4)
        inside = torch.cat([torch.randperm(4), 4 + torch.randperm(4)])
        torch.testing.assert_close(mbd(x[inside], 4), grouped[inside])
        blocks = torch.cat([torch.arange(4, 8), torch.arange(0, 4)])
        torch.testing.assert_close(mbd(x[blocks], 4), grouped[blocks])


def test_mbd_groups_are_independent():
    torch.manual_seed(0)
    mbd = MinibatchDiscrimination(10, kernels=5, dims=3)
    x = torch.randn(8, 10)
    y = x.clone()
    y[1] += 5.0  # a sample of group 0
    with torch.no_grad():
        a, b = mbd(x, 4), mbd(y, 4)
        assert torch.equal(a[4:], b[4:])
        assert not torch.equal(a[:4], b[:4])
        # With the whole batch as one group, the change is seen everywhere.
        assert not torch.equal(mbd(x)[4:], mbd(y)[4:])


@pytest.mark.parametrize("group", [3, 0, -1, 16])
def test_bad_group_sizes_raise(group):
    x = torch.randn(8, 10)
    with pytest.raises(ValueError, match="groups of"):
        MinibatchDiscrimination(10, 5, 3)(x, group)
    with pytest.raises(ValueError, match="groups of"):
        MinibatchStdDev()(torch.randn(8, 2, 4, 4), group)


def test_mbd_bad_reduce():
    with pytest.raises(ValueError, match="reduce"):
        MinibatchDiscrimination(10, 5, 3, reduce="max")


def test_mbd_float32_under_bf16_autocast():
    torch.manual_seed(0)
    mbd = MinibatchDiscrimination(10, kernels=5, dims=3)
    x = torch.randn(4, 10)
    with torch.no_grad():
        ref = mbd(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = mbd(x)
    torch.testing.assert_close(out, ref)


def test_minibatch_stddev():
    layer = MinibatchStdDev()
    x = torch.randn(1, 3, 4, 4).expand(4, 3, 4, 4).contiguous()
    out = layer(x)
    assert out.shape == (4, 4, 4, 4)
    assert torch.equal(out[:, :3], x)
    assert out[:, 3].abs().max() < 1e-3  # sqrt(0 + 1e-8)
    y = torch.randn(8, 3, 4, 4)
    y[:4] = y[0]  # group 0 collapsed, group 1 varied
    out = layer(y, 4)
    assert out[:4, 3].abs().max() < 1e-3
    assert out[4:, 3].min() > 0.1
    assert torch.allclose(out[4:, 3], out[4, 3].expand(4, 4, 4))  # one constant map per group
    # channels_last input (the training loop's layout): the same features
    torch.testing.assert_close(layer(y.contiguous(memory_format=torch.channels_last), 4), out)
    # the written-out variance matches torch's population std, values and gradients
    y.requires_grad_(True)
    ref = (y.reshape(2, 4, -1).var(dim=1, unbiased=False) + 1e-8).sqrt().mean(dim=1)  # [2]
    (g_ref,) = torch.autograd.grad(ref.sum(), y)
    got = layer(y, 4)[::4, 3, 0, 0]
    (g_got,) = torch.autograd.grad(got.sum(), y)
    torch.testing.assert_close(got, ref)
    torch.testing.assert_close(g_got, g_ref)


# ------------------------------------------------------------------ real and fake are never mixed
@pytest.mark.parametrize("stage", [1, 2])
@pytest.mark.parametrize("minibatch", ["mbd", "mbstd"])
def test_discriminator_never_mixes_real_and_fake(stage, minibatch):
    torch.manual_seed(0)
    res = 16 if stage == 1 else 32
    cls = Stage1Discriminator if stage == 1 else Stage2Discriminator
    d = cls(TEXT_DIM, cond_dim=6, df=4, resolution=res, minibatch=minibatch, mbd_kernels=5, mbd_dims=3).train()
    text, wrong = _text(4), _text(4, 5)
    real, fake = _images(4, res, 1), _images(4, res, 2) * 0.3
    with torch.no_grad():
        both = d(text, real=real, fake=fake, wrong_text=wrong, group=2)
        only_real = d(text, real=real, wrong_text=wrong, group=2)
        only_fake = d(text, fake=fake, group=2)
        other_fake = d(text, real=real, fake=_images(4, res, 7), wrong_text=wrong, group=2)
    assert set(only_fake) == {"fake"} | ({"fake_uncond"} if stage == 2 else set())
    for key in only_real:
        torch.testing.assert_close(both[key], only_real[key], rtol=0, atol=0)
        torch.testing.assert_close(other_fake[key], only_real[key], rtol=0, atol=0)
    for key in only_fake:
        torch.testing.assert_close(both[key], only_fake[key], rtol=0, atol=0)


def test_head_minibatch_features_are_per_group():
    torch.manual_seed(0)
    head = DiscriminatorHead(8, TEXT_DIM, 6, minibatch="mbd", mbd_kernels=5, mbd_dims=3)
    h = torch.randn(8, 8, 4, 4)
    feats = head.image_features(h, 4)
    assert feats.shape == (8, 13, 4, 4)
    h2 = h.clone()
    h2[0] += 1
    assert torch.equal(head.image_features(h2, 4)[4:], feats[4:])


# ------------------------------------------------------------------ losses, each alone
def _sp(x: float) -> float:
    return math.log1p(math.exp(x))


def test_d_loss_stage1_weighting():
    logits = {"real": torch.full((4,), 2.0), "wrong": torch.full((4,), -1.0), "fake": torch.full((4,), 0.5)}
    # BCE(x, 1) = softplus(-x), BCE(x, 0) = softplus(x); D1 = real + (wrong + fake) / 2.
    expected = _sp(-2.0) + (_sp(-1.0) + _sp(0.5)) / 2
    assert d_loss(logits).item() == pytest.approx(expected, rel=1e-6)
    perfect = {"real": torch.full((4,), 30.0), "wrong": torch.full((4,), -30.0), "fake": torch.full((4,), -30.0)}
    assert d_loss(perfect).item() < 1e-6


def test_d_loss_stage2_weighting_with_uncond():
    logits = {"real": torch.full((4,), 2.0), "wrong": torch.full((4,), -1.0), "fake": torch.full((4,), 0.5),
              "real_uncond": torch.full((4,), 1.0), "fake_uncond": torch.full((4,), -3.0)}
    # D2 = (real + uncond_real) / 2 + (fake + wrong + uncond_fake) / 3.
    expected = (_sp(-2.0) + _sp(-1.0)) / 2 + (_sp(0.5) + _sp(-1.0) + _sp(-3.0)) / 3
    assert d_loss(logits).item() == pytest.approx(expected, rel=1e-6)


def test_g_loss():
    assert g_loss({"fake": torch.full((4,), 0.5)}).item() == pytest.approx(_sp(-0.5), rel=1e-6)
    both = {"fake": torch.full((4,), 0.5), "fake_uncond": torch.full((4,), -2.0)}
    assert g_loss(both).item() == pytest.approx(_sp(-0.5) + _sp(2.0), rel=1e-6)
    # Mixed logits: the mean of per-sample BCE.
    x = torch.tensor([-1.0, 0.0, 3.0, 1.0])
    assert g_loss({"fake": x}).item() == pytest.approx(F.softplus(-x).mean().item(), rel=1e-6)


def test_mode_seeking_loss():
    torch.manual_seed(0)
    z = torch.randn(8, 5)
    base = torch.rand(8, 3, 8, 8) * 2 - 1
    far, close = base.clone(), base.clone()
    for i in range(0, 8, 2):  # pairs: the first two samples of each group of 2
        far[i + 1] = -base[i]
        close[i + 1] = base[i] + 0.01
    l_far, l_close = mode_seeking_loss(far, z, 2), mode_seeking_loss(close, z, 2)
    assert math.isfinite(l_far.item()) and math.isfinite(l_close.item())
    assert l_close > l_far > 0
    # Fully collapsed pairs or identical noise: still finite.
    same = base.clone()
    same[1::2] = same[0::2]
    assert math.isfinite(mode_seeking_loss(same, z, 2).item())
    assert math.isfinite(mode_seeking_loss(far, torch.zeros(8, 5), 2).item())
    # Groups of 4 use their first two samples.
    assert math.isfinite(mode_seeking_loss(far, z, 4).item())
    # Images in channels_last memory format (train.channels_last, the default) give the same value.
    assert mode_seeking_loss(far.to(memory_format=torch.channels_last), z, 2).item() == pytest.approx(l_far.item())


def test_jitter_moves_images_a_little_differentiably_and_reproducibly():
    x = torch.zeros(6, 3, 32, 32)
    x[:, :, 12:20, 12:20] = 1.0  # a centred square on black
    assert jitter(x, 0.0) is x
    a = jitter(x, 0.2, torch.Generator().manual_seed(0))
    assert torch.equal(a, jitter(x, 0.2, torch.Generator().manual_seed(0)))
    assert not torch.equal(a, jitter(x, 0.2, torch.Generator().manual_seed(1)))
    # Each image moved (shift and zoom differ per image), the square stays near the centre and keeps its area.
    assert all(not torch.allclose(a[i], x[i]) for i in range(6))
    ys, xs = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    mass = a[:, 0].sum(dim=(1, 2))
    cy = (a[:, 0] * ys).sum(dim=(1, 2)) / mass
    cx = (a[:, 0] * xs).sum(dim=(1, 2)) / mass
    assert ((cy - 15.5).abs() <= 0.2 * 16 + 1).all() and ((cx - 15.5).abs() <= 0.2 * 16 + 1).all()
    assert ((mass / 64 - 1).abs() < 0.6).all()
    leaf = x.clone().requires_grad_(True)
    jitter(leaf, 0.2, torch.Generator().manual_seed(0)).sum().backward()
    assert leaf.grad is not None and leaf.grad.abs().sum() > 0


def test_gaussian_blur_keeps_mass_spreads_a_point_and_passes_gradients():
    x = torch.zeros(2, 3, 15, 15)
    x[:, :, 7, 7] = 1.0
    assert gaussian_blur(x, 0.0) is x
    y = gaussian_blur(x, 1.0)
    assert torch.allclose(y.sum(dim=(2, 3)), torch.ones(2, 3), atol=1e-5)  # reflected borders, far from the point
    # separable Gaussian: the centre keeps (1 / sum exp(-t^2 / 2), t = -2..2)^2 of the mass, neighbours less
    k = torch.exp(-torch.arange(-2.0, 3.0) ** 2 / 2)
    assert torch.isclose(y[0, 0, 7, 7], (1 / k.sum()) ** 2, atol=1e-6)
    assert y[0, 0, 7, 8] < y[0, 0, 7, 7] and y[0, 0, 7, 10] == 0  # radius ceil(2 sigma) = 2
    leaf = x.clone().requires_grad_(True)
    (gaussian_blur(leaf, 1.0) * torch.rand(2, 3, 15, 15)).sum().backward()
    assert leaf.grad is not None and leaf.grad.abs().sum() > 0


def test_clip_match_loss_extra_candidates_compete_with_the_own_caption():
    torch.manual_seed(0)
    captions = F.normalize(torch.randn(3, 16), dim=1)
    text = captions.repeat_interleave(2, dim=0)
    image = F.normalize(text + 0.3 * torch.randn(6, 16), dim=1)
    plain = clip_match_loss(image, text, 2, scale=20.0)
    assert clip_match_loss(image, text, 2, scale=20.0, extra=captions[:0]) == plain  # none given: unchanged
    far = clip_match_loss(image, text, 2, scale=20.0, extra=-captions)  # opposite of every caption: ~no effect
    near = clip_match_loss(image, text, 2, scale=20.0, extra=F.normalize(captions + 0.1 * torch.randn(3, 16), dim=1))
    assert plain <= far < plain + 1e-3
    assert near > plain + 0.3  # a negative close to the caption makes the same images score worse


def test_clip_match_loss_rewards_images_that_pick_their_own_caption():
    torch.manual_seed(0)
    captions = F.normalize(torch.randn(3, 16), dim=1)  # 3 groups of 2 samples
    text = captions.repeat_interleave(2, dim=0)
    own = clip_match_loss(text.clone(), text, 2, scale=50.0)
    other = clip_match_loss(text.roll(2, dims=0), text, 2, scale=50.0)  # each image shows the next caption
    # An image equally close to every caption: chance, log(number of groups).
    centre = F.normalize(captions.sum(0), dim=0)
    for _ in range(20):  # make it equidistant: project out the differences of its cosines
        cos = captions @ centre
        centre = F.normalize(centre + torch.linalg.lstsq(captions, (cos.mean() - cos)[:, None]).solution[:, 0], dim=0)
    blank = clip_match_loss(centre.expand(6, 16), text, 2, scale=50.0)
    assert own.item() < 0.01
    assert other.item() > 10
    assert blank.item() == pytest.approx(math.log(3), abs=1e-4)
    # Only the group's first caption is a candidate: groups of 1 compare every sample.
    assert clip_match_loss(text.clone(), text, 1, scale=50.0).item() == pytest.approx(math.log(2), abs=1e-3)
    # Gradients reach the images.
    img = text.roll(2, dims=0).clone().requires_grad_(True)
    clip_match_loss(img, text, 2, scale=50.0).backward()
    assert img.grad is not None and img.grad.abs().sum() > 0


# ------------------------------------------------------------------ discriminator variants
def test_hinge_losses():
    logits = {"real": torch.tensor([2.0, 0.5]), "wrong": torch.tensor([-2.0, 0.0]), "fake": torch.tensor([0.5, -0.5])}
    # D = relu(1 - real) + (relu(1 + wrong) + relu(1 + fake)) / 2, each averaged over the batch.
    expected = (0 + 0.5) / 2 + ((0 + 1) / 2 + (1.5 + 0.5) / 2) / 2
    assert d_loss(logits, "hinge").item() == pytest.approx(expected, rel=1e-6)
    both = {"fake": torch.tensor([0.5, -0.5]), "fake_uncond": torch.tensor([2.0, 4.0])}
    assert g_loss(both, "hinge").item() == pytest.approx(0.0 - 3.0, rel=1e-6)
    with pytest.raises(ValueError, match="loss must be one of"):
        d_loss(logits, "wasserstein")


@pytest.mark.parametrize("stage", [1, 2])
def test_spectral_norm_discriminator_has_no_batch_norm_and_unit_spectral_norms(stage):
    cls, res = (Stage1Discriminator, 16) if stage == 1 else (Stage2Discriminator, 32)
    d = cls(TEXT_DIM, cond_dim=6, df=4, resolution=res, minibatch="mbstd", norm="spectral", cond="projection")
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in d.modules())
    d.train()
    for _ in range(30):  # power iterations converge during training-mode forwards
        d(_text(4), real=_images(4, res), fake=_images(4, res, 2), wrong_text=_text(4, 3), group=2)
    d.eval()
    convs = [m for m in d.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert convs and all(hasattr(m, "parametrizations") for m in convs)
    for m in convs:
        w = m.weight.detach().flatten(1)
        assert torch.linalg.matrix_norm(w, ord=2).item() == pytest.approx(1.0, abs=0.05)
    with pytest.raises(ValueError, match="norm must be one of"):
        cls(TEXT_DIM, df=4, resolution=res, norm="layer")


def test_projection_head_logit_is_affine_in_the_text_embedding():
    """Projection D: logit(x, t) = w . phi(x) + <embed(proj(t)), phi(x)>; with a linear text path the
    difference of logits for two captions is the inner product with phi(x) of their embedding difference."""
    head = DiscriminatorHead(8, TEXT_DIM, 6, minibatch="none", norm="batch", cond="projection").eval()
    feats = torch.randn(3, 8, 4, 4)
    t1, t2 = _text(3, 1), _text(3, 2)
    phi = head.joint(feats).sum(dim=(2, 3))
    diff = head.cond_logit(feats, t1) - head.cond_logit(feats, t2)
    expected = ((head.text_embed(head.text_proj(t1)) - head.text_embed(head.text_proj(t2))) * phi).sum(1)
    assert torch.allclose(diff, expected, atol=1e-5)
    with pytest.raises(ValueError, match="cond must be"):
        DiscriminatorHead(8, TEXT_DIM, 6, cond="attention")


# ------------------------------------------------------------------ the image-tower branch of D
@pytest.mark.parametrize("stage", [1, 2])
def test_discriminator_tower_branch_reads_the_tower_features(stage):
    torch.manual_seed(0)
    res = 16 if stage == 1 else 32
    cls = Stage1Discriminator if stage == 1 else Stage2Discriminator
    d = cls(TEXT_DIM, cond_dim=6, df=4, resolution=res, minibatch="mbstd", norm="spectral", cond="projection",
            tower_channels=5).eval()
    text, real, fake = _text(4), _images(4, res), _images(4, res, 2)
    tower = torch.randn(4, 5, 4, 4, requires_grad=True)
    out = d(text, fake=fake, group=2, fake_tower=tower)
    out["fake"].sum().backward()
    assert tower.grad is not None and tower.grad.abs().sum() > 0  # the generator is trained through it
    with torch.no_grad():
        other = d(text, fake=fake, group=2, fake_tower=tower + 1)
        assert not torch.allclose(other["fake"], out["fake"])  # the logit depends on the tower features
        same = d(text, real=real, fake=fake, group=2, real_tower=torch.randn(4, 5, 4, 4), fake_tower=tower)
        torch.testing.assert_close(same["fake"], out["fake"], rtol=0, atol=0)  # real and fake still apart
    with pytest.raises(ValueError, match="pass fake_tower"):
        d(text, fake=fake, group=2)
    plain = cls(TEXT_DIM, cond_dim=6, df=4, resolution=res, minibatch="mbstd")
    with pytest.raises(ValueError, match="real_tower given, but this discriminator has no tower branch"):
        plain(text, real=real, group=2, real_tower=torch.randn(4, 5, 4, 4))
    with pytest.raises(ValueError, match="tower_channels must be >= 0"):
        cls(TEXT_DIM, df=4, resolution=res, tower_channels=-1)


def test_stage1_generator_lays_out_the_image_in_float32_under_bf16_autocast():
    g = Stage1Generator(TEXT_DIM, z_dim=8, cond_dim=6, gf=4, resolution=16).eval()
    dtypes = {}
    g.fc.register_forward_hook(lambda m, i, o: dtypes.__setitem__("fc", o.dtype))
    g.ups.register_forward_hook(lambda m, i, o: dtypes.__setitem__("ups", o.dtype))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        img, mu, _ = g(_text(2), torch.randn(2, 8), torch.randn(2, 6))
    assert dtypes == {"fc": torch.float32, "ups": torch.bfloat16}  # the rest still runs in bf16
    assert mu.dtype == torch.float32
    with torch.no_grad():
        ref = g(_text(2), torch.randn(2, 8), torch.randn(2, 6))[0]
    assert ref.dtype == torch.float32 and img.shape == ref.shape


def test_stage2_generator_conditions_in_float32_under_bf16_autocast():
    g = Stage2Generator(TEXT_DIM, cond_dim=6, gf=4, res_blocks=1, res_in=16, resolution=32).eval()
    dtypes = {}
    g.ca.register_forward_hook(lambda m, i, o: dtypes.__setitem__("ca", o[0].dtype))
    g.res.register_forward_hook(lambda m, i, o: dtypes.__setitem__("res", o.dtype))
    low = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        img, mu, _ = g(low, _text(2), torch.randn(2, 6))
    assert dtypes == {"ca": torch.float32, "res": torch.bfloat16}  # the residual blocks still run in bf16
    assert mu.dtype == torch.float32 and img.shape == (2, 3, 32, 32)
