"""GAN losses as small pure functions of logits (binary cross-entropy on logits)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits.float(), torch.full_like(logits.float(), target))


def kl_loss(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)), averaged over elements (StackGAN's convention); 0 at the prior."""
    mu, logvar = mu.float(), logvar.float()
    return -0.5 * torch.mean(1 + logvar - mu.pow(2) - logvar.exp())


def d_loss(logits: dict[str, torch.Tensor]) -> torch.Tensor:
    """Matching-aware discriminator loss (Reed et al. 2016; StackGAN's weighting).

    Stage I:  real + (wrong + fake) / 2.
    Stage II (with unconditional logits): (real + real_uncond) / 2 + (fake + wrong + fake_uncond) / 3.
    """
    real, wrong, fake = _bce(logits["real"], 1.0), _bce(logits["wrong"], 0.0), _bce(logits["fake"], 0.0)
    if "real_uncond" in logits:
        return (real + _bce(logits["real_uncond"], 1.0)) / 2 + (fake + wrong + _bce(logits["fake_uncond"], 0.0)) / 3
    return real + (wrong + fake) / 2


def g_loss(logits: dict[str, torch.Tensor]) -> torch.Tensor:
    """Non-saturating generator loss on the fake logits (plus the unconditional one when present)."""
    loss = _bce(logits["fake"], 1.0)
    if "fake_uncond" in logits:
        loss = loss + _bce(logits["fake_uncond"], 1.0)
    return loss


def mode_seeking_loss(images: torch.Tensor, z: torch.Tensor, group: int) -> torch.Tensor:
    """Mode-seeking term (Mao et al. 2019): 1 / (image distance / noise distance + 1e-5).

    images `[N, 3, H, W]` and z `[N, Z]` hold N // group groups of one caption each; the
    first two samples of every group form the pair.
    """
    n = images.shape[0]
    x = images.float().view(n // group, group, -1)
    zz = z.float().view(n // group, group, -1)
    lz = (x[:, 0] - x[:, 1]).abs().mean() / ((zz[:, 0] - zz[:, 1]).abs().mean() + 1e-8)
    return 1.0 / (lz + 1e-5)
