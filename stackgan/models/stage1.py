"""Stage I: text + noise -> a low-resolution image, and its discriminator."""

from __future__ import annotations

import torch
from torch import nn

from .blocks import D_NORMS, conv3x3, down_stage, film_layers, init_weights, log2_int, modulated_ups, spectral_normalize, up_block
from .conditioning import ConditioningAugmentation
from .heads import DiscriminatorHead, MatchingDiscriminator


class Stage1Generator(nn.Module):
    """concat(z, c) -> Linear -> 8gf x 4 x 4 -> upsampling blocks (halving channels) -> RGB.

    Args:
        text_dim:   D of the text embeddings `[N, D]`.
        z_dim:      noise dimension (paper: 100).
        cond_dim:   conditioning-augmentation dimension (paper: 128).
        gf:         base width; the 4x4 map has 8 * gf channels (paper: gf 128 -> 1024).
        resolution: output side in pixels, a power of two >= 8 (paper: 64).
        film:       the condition also scales and shifts every upsampling block's batch-norm output
                    per sample (FiLM, Perez et al. 2018; DF-GAN's deep fusion does the same with
                    text; `modulated_ups`). gamma and beta start at 0, so an untrained modulation
                    is StackGAN's block. Off: StackGAN, where the text enters only through the
                    first layer.
    """

    def __init__(self, text_dim: int, z_dim: int = 100, cond_dim: int = 128, gf: int = 128, resolution: int = 64,
                 film: bool = False):
        super().__init__()
        self.text_dim, self.z_dim, self.cond_dim, self.resolution = text_dim, z_dim, cond_dim, resolution
        n_up = log2_int(resolution, "stage I resolution") - 2
        ch = gf * 8
        self.ca = ConditioningAugmentation(text_dim, cond_dim)
        self.fc = nn.Sequential(nn.Linear(z_dim + cond_dim, ch * 16, bias=False), nn.BatchNorm1d(ch * 16), nn.ReLU(True))
        ups = []
        for _ in range(n_up):
            ups.append(up_block(ch, max(ch // 2, 8)))
            ch = max(ch // 2, 8)
        self.ups = nn.Sequential(*ups)
        self.to_rgb = nn.Sequential(conv3x3(ch, 3), nn.Tanh())
        self.ch0 = gf * 8
        init_weights(self)
        self.ca.reset_parameters()
        self.film = film_layers(self.ups, cond_dim) if film else None

    def forward(
        self, text: torch.Tensor, z: torch.Tensor, eps: torch.Tensor | None = None, noise_scale: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """text `[N, D]`, z `[N, z_dim]` -> (image `[N, 3, R, R]` in [-1, 1], mu, logvar)."""
        if z.shape != (text.shape[0], self.z_dim):
            raise ValueError(f"z must be [{text.shape[0]}, {self.z_dim}], got {tuple(z.shape)}")
        # The first layer, which lays out the whole image, stays in float32 under bf16 autocast as
        # the conditioning does (a rounding there moves every later pixel): with both in bf16 the
        # shapes probe read the bundled model's samples differently for 2.7 % of 512, against
        # 1.6 % this way. They are a small share of the FLOPs.
        c, mu, logvar = self.ca(text, eps, noise_scale)
        with torch.autocast(text.device.type, enabled=False):
            h = self.fc(torch.cat([z.float(), c], dim=1)).view(-1, self.ch0, 4, 4)  # [N, 8gf, 4, 4]
        h = self.ups(h) if self.film is None else modulated_ups(self.ups, self.film, h, c)
        return self.to_rgb(h), mu, logvar


class Stage1Discriminator(MatchingDiscriminator):
    """Conv4x4 stride-2 blocks down to 4x4 (channels doubling up to 8df), then the head.

    Args:
        text_dim:   D of the text embeddings.
        cond_dim:   text compression size in the head.
        df:         base width (paper: 64).
        resolution: input side in pixels (paper: 64).
        minibatch, mbd_kernels, mbd_dims, cond: see `DiscriminatorHead`.
        norm:       "batch" (StackGAN), "spectral" (no batch norm, every conv and linear
                    layer spectrally normalised; Miyato et al. 2018) or "none" (neither).
        tower_channels: C of a frozen image tower's 4x4 feature map that `forward` also reads
                    (`real_tower` / `fake_tower`); 0 = none (StackGAN).
        aux_classes: classes of the head's auxiliary classifier (0 = none; `DiscriminatorHead`).
        aux_twin:   also the classifier's twin, trained on generated images (Gong et al. 2019; `DiscriminatorHead`).
        upsample:   read the images enlarged by this factor (nearest neighbour; 1, 2 or 4), with one
                    more stride-2 block per doubling: small objects keep more pixels through the
                    first strided convolutions (1 = StackGAN).
        depth:      extra conv3x3 layers at each scale after its stride-2 block (`down_stage`);
                    0 = StackGAN's encoder.
    """

    def __init__(
        self,
        text_dim: int,
        cond_dim: int = 128,
        df: int = 64,
        resolution: int = 64,
        minibatch: str = "mbd",
        mbd_kernels: int = 100,
        mbd_dims: int = 5,
        norm: str = "batch",
        cond: str = "concat",
        tower_channels: int = 0,
        depth: int = 0,
        aux_classes: int = 0,
        upsample: int = 1,
        aux_twin: bool = False,
    ):
        super().__init__()
        if norm not in D_NORMS:
            raise ValueError(f"norm must be one of {D_NORMS}, got {norm!r}")
        if upsample not in (1, 2, 4):
            raise ValueError(f"upsample must be 1, 2 or 4, got {upsample}")
        self.resolution = resolution
        bn = norm == "batch"
        n_down = log2_int(resolution * upsample, "stage I resolution") - 2
        layers: list[nn.Module] = [nn.Upsample(scale_factor=upsample, mode="nearest")] if upsample > 1 else []
        ch = 3
        for k in range(n_down):
            out = df * min(2**k, 8)
            layers += down_stage(ch, out, bn=bn and k > 0, depth=depth)
            ch = out
        self.encoder = nn.Sequential(*layers)
        self._tower_branch(tower_channels, ch)
        self.head = DiscriminatorHead(ch, text_dim, cond_dim, minibatch, mbd_kernels, mbd_dims, unconditional=False,
                                       norm=norm, cond=cond, aux_classes=aux_classes, aux_twin=aux_twin)
        init_weights(self)
        if norm == "spectral":
            spectral_normalize(self)
