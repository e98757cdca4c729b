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


D_NORMS = ("batch", "spectral")


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
