"""Building blocks shared by the generators and discriminators (StackGAN-Pytorch's layout)."""

from __future__ import annotations

import torch
from torch import nn


def conv3x3(in_ch: int, out_ch: int) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, 1, 1, bias=False)


def up_block(in_ch: int, out_ch: int) -> nn.Sequential:
    """Nearest x2 upsampling -> conv3x3 -> BN -> ReLU."""
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), conv3x3(in_ch, out_ch), nn.BatchNorm2d(out_ch), nn.ReLU(True))


def down_block(in_ch: int, out_ch: int, bn: bool = True) -> nn.Sequential:
    """Conv4x4 stride 2 -> (BN) -> LeakyReLU 0.2: halves the resolution."""
    layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, 4, 2, 1, bias=not bn)]
    if bn:
        layers.append(nn.BatchNorm2d(out_ch))
    layers.append(nn.LeakyReLU(0.2, True))
    return nn.Sequential(*layers)


D_NORMS = ("batch", "spectral", "none")


def down_stage(in_ch: int, out_ch: int, bn: bool, depth: int = 0) -> list[nn.Module]:
    """`down_block`, then `depth` conv3x3 -> (BN) -> LeakyReLU 0.2 layers at the new resolution:
    a discriminator encoder with `depth` > 0 looks at each scale through more than one layer
    (as the stride-1 convolutions of SNGAN's and DCGAN-successors' discriminators do)."""
    layers: list[nn.Module] = [down_block(in_ch, out_ch, bn=bn)]
    for _ in range(depth):
        layers += [nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=not bn), *([nn.BatchNorm2d(out_ch)] if bn else []),
                   nn.LeakyReLU(0.2, True)]
    return layers


def spectral_normalize(module: nn.Module) -> nn.Module:
    """Spectral normalisation (Miyato et al. 2018) on every conv and linear layer of `module`.

    Call after `init_weights`: the parametrisation rescales the initial weights by their
    largest singular value, so the initial scale no longer matters.
    """
    from torch.nn.utils.parametrizations import spectral_norm

    for m in list(module.modules()):
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            spectral_norm(m)
    return module


class ResBlock(nn.Module):
    """(conv3x3, BN, ReLU, conv3x3, BN) + identity -> ReLU."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            conv3x3(channels, channels), nn.BatchNorm2d(channels), nn.ReLU(True),
            conv3x3(channels, channels), nn.BatchNorm2d(channels),
        )  # fmt: skip
        self.act = nn.ReLU(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.body(x))


def film_layers(ups: nn.Sequential, cond_dim: int) -> nn.ModuleList:
    """One Linear per `up_block` of `ups`, c -> (gamma, beta) for its batch-norm output, at zero:
    an untrained modulation leaves the blocks as they are. Call after `init_weights`."""
    layers = nn.ModuleList(nn.Linear(cond_dim, 2 * blk[2].num_features) for blk in ups)
    for lin in layers:
        nn.init.zeros_(lin.weight)
        nn.init.zeros_(lin.bias)
    return layers


def modulated_ups(ups: nn.Sequential, film: nn.ModuleList, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """`ups(h)` with each block's batch-norm output scaled and shifted per sample by the condition
    (FiLM, Perez et al. 2018; conditional batch norm): ReLU(BN(conv(up(h))) * (1 + gamma(c)) + beta(c)).
    The blocks keep `up_block`'s layout, so BatchNorm folding and the transposed-convolution
    rewrite of `stackgan.optimize` apply to them unchanged."""
    for (up, conv, bn, act), lin in zip(ups, film):
        gamma, beta = lin(c).chunk(2, dim=1)
        h = bn(conv(up(h)))
        h = act(h * (1 + gamma[:, :, None, None].to(h.dtype)) + beta[:, :, None, None].to(h.dtype))
    return h


def init_weights(module: nn.Module) -> None:
    """StackGAN's init: conv/linear weights N(0, 0.02), BN gamma N(1, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def log2_int(n: int, what: str) -> int:
    k = n.bit_length() - 1
    if n <= 0 or (1 << k) != n:
        raise ValueError(f"{what} must be a power of two, got {n}")
    return k
