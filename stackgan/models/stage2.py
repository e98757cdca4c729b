"""Stage II: the stage I image + the text again -> a higher-resolution image, and its discriminator."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import (
    D_NORMS,
    ResBlock,
    conv3x3,
    down_stage,
    film_layers,
    init_weights,
    log2_int,
    modulated_ups,
    spectral_normalize,
    up_block,
)
from .conditioning import ConditioningAugmentation
from .heads import DiscriminatorHead, MatchingDiscriminator

SKIP_CLAMP = 0.999  # model.g2_skip: stage I pixels are clamped to +-this before atanh (atanh(0.999) = 3.8)


class Stage2Generator(nn.Module):
    """Encode the stage I image to res_in/4, join the text, residual blocks, upsample to `resolution`.

    Stage II takes no new noise (as in the paper): its diversity comes from stage I's image
    and its own conditioning augmentation.

    Args:
        text_dim:   D of the text embeddings `[N, D]`.
        cond_dim:   conditioning-augmentation dimension (paper: 128).
        gf:         base width (paper: 128; the joint map has 4 * gf channels).
        res_blocks: residual blocks at res_in/4 (paper: 4).
        res_in:     side of the stage I image (paper: 64).
        resolution: output side (paper: 256).
        film:       the condition also scales and shifts every upsampling block's batch-norm output
                    per sample (`modulated_ups`), starting at zero; off: StackGAN, where the text
                    joins only once, before the residual blocks.
        skip:       the output is the stage I image enlarged (bilinear) plus a learned correction in
                    tanh's logit space, `tanh(atanh(up(low)) + to_rgb(h))`, the correction starting at
                    zero: an untrained stage II returns the enlarged stage I image instead of noise,
                    so a short stage II refines what stage I drew rather than first relearning it.
                    Off: StackGAN, where stage II redraws the image from its features.
    """

    def __init__(
        self, text_dim: int, cond_dim: int = 128, gf: int = 128, res_blocks: int = 4, res_in: int = 64, resolution: int = 256,
        film: bool = False, skip: bool = False,
    ):
        super().__init__()
        self.text_dim, self.cond_dim, self.res_in, self.resolution = text_dim, cond_dim, res_in, resolution
        n_up = log2_int(resolution, "stage II resolution") - log2_int(res_in, "stage I resolution") + 2
        if n_up < 3:
            raise ValueError(f"stage II resolution {resolution} must be at least twice stage I's {res_in}")
        self.ca = ConditioningAugmentation(text_dim, cond_dim)
        self.encoder = nn.Sequential(
            conv3x3(3, gf), nn.ReLU(True),
            nn.Conv2d(gf, gf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(gf * 2), nn.ReLU(True),
            nn.Conv2d(gf * 2, gf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(gf * 4), nn.ReLU(True),
        )  # fmt: skip
        self.joint = nn.Sequential(conv3x3(gf * 4 + cond_dim, gf * 4), nn.BatchNorm2d(gf * 4), nn.ReLU(True))
        self.res = nn.Sequential(*[ResBlock(gf * 4) for _ in range(res_blocks)])
        ups, ch = [], gf * 4
        for _ in range(n_up):
            ups.append(up_block(ch, max(ch // 2, 8)))
            ch = max(ch // 2, 8)
        self.ups = nn.Sequential(*ups)
        self.skip = skip
        self.to_rgb = nn.Sequential(conv3x3(ch, 3)) if skip else nn.Sequential(conv3x3(ch, 3), nn.Tanh())
        init_weights(self)
        if skip:
            nn.init.zeros_(self.to_rgb[0].weight)
        self.ca.reset_parameters()
        self.film = film_layers(self.ups, cond_dim) if film else None

    def forward(
        self, low: torch.Tensor, text: torch.Tensor, eps: torch.Tensor | None = None, noise_scale: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """low `[N, 3, res_in, res_in]`, text `[N, D]` -> (image `[N, 3, R, R]`, mu, logvar)."""
        if low.shape[1:] != (3, self.res_in, self.res_in):
            raise ValueError(f"stage I images must be [N, 3, {self.res_in}, {self.res_in}], got {tuple(low.shape)}")
        c, mu, logvar = self.ca(text, eps, noise_scale)  # float32 even under autocast
        h = self.encoder(low)  # [N, 4gf, res_in/4, res_in/4]
        c_map = c[:, :, None, None].expand(-1, -1, h.shape[2], h.shape[3])
        h = self.res(self.joint(torch.cat([h, c_map], dim=1)))
        h = self.ups(h) if self.film is None else modulated_ups(self.ups, self.film, h, c)
        if not self.skip:
            return self.to_rgb(h), mu, logvar
        base = F.interpolate(low.float(), size=(self.resolution, self.resolution), mode="bilinear", align_corners=False)
        base = torch.atanh(base.clamp(-SKIP_CLAMP, SKIP_CLAMP))
        return torch.tanh(base + self.to_rgb(h).float()), mu, logvar


class Stage2Discriminator(MatchingDiscriminator):
    """Conv4x4 stride-2 blocks down to 4x4 (channels doubling up to 32df), 3x3 convs back to
    8df, then a head with conditional and unconditional logits (as StackGAN's stage II D).

    Args: as `Stage1Discriminator`; resolution is stage II's (paper: 256).
    """

    def __init__(
        self,
        text_dim: int,
        cond_dim: int = 128,
        df: int = 64,
        resolution: int = 256,
        minibatch: str = "mbd",
        mbd_kernels: int = 100,
        mbd_dims: int = 5,
        norm: str = "batch",
        cond: str = "concat",
        tower_channels: int = 0,
        depth: int = 0,
        aux_classes: int = 0,
        aux_twin: bool = False,
    ):
        super().__init__()
        if norm not in D_NORMS:
            raise ValueError(f"norm must be one of {D_NORMS}, got {norm!r}")
        self.resolution = resolution
        bn = norm == "batch"
        n_down = log2_int(resolution, "stage II resolution") - 2
        layers, ch = [], 3
        for k in range(n_down):
            out = df * min(2**k, 32)
            layers += down_stage(ch, out, bn=bn and k > 0, depth=depth)
            ch = out
        while ch > df * 8:
            out = max(ch // 2, df * 8)
            layers += [conv3x3(ch, out), *([nn.BatchNorm2d(out)] if bn else []), nn.LeakyReLU(0.2, True)]
            ch = out
        self.encoder = nn.Sequential(*layers)
        self._tower_branch(tower_channels, ch)
        self.head = DiscriminatorHead(ch, text_dim, cond_dim, minibatch, mbd_kernels, mbd_dims, unconditional=True,
                                       norm=norm, cond=cond, aux_classes=aux_classes, aux_twin=aux_twin)
        init_weights(self)
        if norm == "spectral":
            spectral_normalize(self)
