"""GAN losses as small pure functions of logits (binary cross-entropy on logits)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits.float(), torch.full_like(logits.float(), target))


def kl_loss(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)), averaged over elements (StackGAN's convention); 0 at the prior."""
    mu, logvar = mu.float(), logvar.float()
    return -0.5 * torch.mean(1 + logvar - mu.pow(2) - logvar.exp())


def _hinge(logits: torch.Tensor, target: float) -> torch.Tensor:
    """Hinge loss of the discriminator: relu(1 - x) for real (target 1), relu(1 + x) for fake."""
    sign = 1.0 if target == 1.0 else -1.0
    return F.relu(1.0 - sign * logits.float()).mean()


LOSSES = ("bce", "hinge")


def d_loss(logits: dict[str, torch.Tensor], kind: str = "bce") -> torch.Tensor:
    """Matching-aware discriminator loss (Reed et al. 2016; StackGAN's weighting).

    Stage I:  real + (wrong + fake) / 2.
    Stage II (with unconditional logits): (real + real_uncond) / 2 + (fake + wrong + fake_uncond) / 3.
    kind: "bce" (cross-entropy on logits, StackGAN) or "hinge" (each term a hinge, as in SNGAN).
    """
    if kind not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {kind!r}")
    term = _bce if kind == "bce" else _hinge
    real, wrong, fake = term(logits["real"], 1.0), term(logits["wrong"], 0.0), term(logits["fake"], 0.0)
    if "real_uncond" in logits:
        return (real + term(logits["real_uncond"], 1.0)) / 2 + (fake + wrong + term(logits["fake_uncond"], 0.0)) / 3
    return real + (wrong + fake) / 2


def g_loss(logits: dict[str, torch.Tensor], kind: str = "bce") -> torch.Tensor:
    """Generator loss on the fake logits (plus the unconditional one when present): non-saturating
    cross-entropy ("bce") or the hinge generator loss, -mean(logit) ("hinge")."""
    if kind not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {kind!r}")
    names = ["fake"] + (["fake_uncond"] if "fake_uncond" in logits else [])
    if kind == "hinge":
        return sum(-logits[n].float().mean() for n in names)
    return sum(_bce(logits[n], 1.0) for n in names)


def r1_penalty(logits: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): half the mean squared norm of d logits / d real images, kept in
    the graph so that the discriminator step also descends it. `real` must require grad and
    `logits` be computed from it."""
    (grad,) = torch.autograd.grad(logits.float().sum(), real, create_graph=True)
    return grad.float().pow(2).flatten(1).sum(1).mean() / 2


def mode_seeking_loss(images: torch.Tensor, z: torch.Tensor, group: int) -> torch.Tensor:
    """Mode-seeking term (Mao et al. 2019): 1 / (image distance / noise distance + 1e-5).

    images `[N, 3, H, W]` and z `[N, Z]` hold N // group groups of one caption each; the
    first two samples of every group form the pair.
    """
    n = images.shape[0]
    x = images.float().reshape(n // group, group, -1)  # reshape: the images may be channels_last
    zz = z.float().reshape(n // group, group, -1)
    lz = (x[:, 0] - x[:, 1]).abs().mean() / ((zz[:, 0] - zz[:, 1]).abs().mean() + 1e-8)
    return 1.0 / (lz + 1e-5)


def clip_match_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, group: int, scale: float,
                    extra: torch.Tensor | None = None) -> torch.Tensor:
    """Text-image matching loss for the generator (as in LAFITE and GALIP, with the text encoder's
    own image tower): each fake image must pick its caption among the batch's captions.

    image_emb, text_emb `[N, D]` unit norm; the batch holds N // group groups of one caption each,
    so the candidates are the groups' captions and the target of image i is group i // group.
    `extra` `[M, D]`: further candidates that are no image's caption (hard negatives).
    Cross-entropy over `scale * cosine`; log(N // group) when images match no caption better than
    the others, 0 when each image picks its own caption with certainty.
    """
    n = image_emb.shape[0]
    captions = text_emb.float().view(n // group, group, -1)[:, 0]
    if extra is not None and len(extra):
        captions = torch.cat([captions, extra.float()])
    logits = scale * image_emb.float() @ captions.t()
    target = torch.arange(n, device=image_emb.device) // group
    return F.cross_entropy(logits, target)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of `[N, C, H, W]` with std `sigma` pixels (kernel radius ceil(2 sigma),
    reflected borders); differentiable in x; sigma <= 0 returns x."""
    if sigma <= 0:
        return x
    r = max(1, math.ceil(2 * sigma))
    t = torch.arange(-r, r + 1, dtype=torch.float32, device=x.device)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = (k / k.sum()).to(x.dtype)
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def jitter(images: torch.Tensor, strength: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random shift and zoom per image, differentiable in the images (bilinear resampling, border
    pixels repeated). Shifts up to `strength` of half the image size, zoom in [1 - strength,
    1 + strength]. Used on fakes before the text encoder's image tower, so that the generator
    must satisfy the matching loss with what survives small moves and resampling, not with
    pixel-exact patterns the tower happens to read.
    """
    if strength <= 0:
        return images
    n = images.shape[0]
    u = torch.rand(n, 3, generator=generator).to(images.device) * 2 - 1  # [-1, 1)
    scale = 1 + strength * u[:, 0]
    theta = torch.zeros(n, 2, 3, device=images.device)
    theta[:, 0, 0] = theta[:, 1, 1] = scale
    theta[:, :, 2] = strength * u[:, 1:]
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border", align_corners=False).to(images.dtype)


def aux_loss(logits: torch.Tensor, targets: torch.Tensor, sizes: list[int], confidence: float = 0.0) -> torch.Tensor:
    """Auxiliary classification loss (AC-GAN): `logits` `[N, sum(sizes)]` hold one block of class
    logits per attribute, `targets` `[N, A]` one class index per attribute (-1: no target). The sum
    over attributes of the mean cross-entropy over the samples that have a target (0 for an
    attribute without any). `confidence` > 0: a sample's cross-entropy counts only above
    -log(confidence), so one the classifier already reads with that probability adds nothing."""
    floor = -math.log(confidence) if confidence > 0 else 0.0
    loss, start = logits.new_zeros((), dtype=torch.float32), 0
    for j, n in enumerate(sizes):
        t = targets[:, j]
        # Summed and divided by the count rather than `if (t >= 0).any()`: no host sync on a GPU.
        per_sample = F.cross_entropy(logits[:, start:start + n].float(), t, ignore_index=-1, reduction="none")
        if floor:
            per_sample = (per_sample - floor).clamp(min=0)
        loss = loss + per_sample.sum() / (t >= 0).sum().clamp(min=1)
        start += n
    return loss


def aux_spread_loss(logits: torch.Tensor, targets: torch.Tensor, sizes: list[int], group: int) -> torch.Tensor:
    """Minus the variety the auxiliary classifier reads among the samples of one caption, over the
    attributes that caption leaves unnamed: `logits` `[N, sum(sizes)]` and `targets` `[N, A]` as
    `aux_loss`, the batch in groups of `group` consecutive samples sharing a caption. Per group and
    unnamed attribute, the mutual information between a sample's place in the group and the value
    read, H(mean p) - mean H(p) (as IMSAT's, Hu et al. 2017): high when the samples are each read
    with confidence and read differently, 0 when they read the same or nothing clearly; divided
    by its maximum, log min(group, classes), and averaged; minus that mean per attribute, summed."""
    if logits.shape[0] % group:
        raise ValueError(f"batch of {logits.shape[0]} is not a whole number of groups of {group}")
    loss, start = logits.new_zeros((), dtype=torch.float32), 0
    for j, n in enumerate(sizes):
        p = F.softmax(logits[:, start:start + n].float(), dim=1).view(-1, group, n)
        unnamed = (targets[::group, j] < 0).float()
        mean = p.mean(dim=1)
        h_mean = -(mean * mean.clamp(min=1e-12).log()).sum(dim=1)
        h_each = -(p * p.clamp(min=1e-12).log()).sum(dim=2).mean(dim=1)
        info = (h_mean - h_each) / math.log(min(group, n))
        loss = loss - (info * unnamed).sum() / unnamed.sum().clamp(min=1)
        start += n
    return loss
