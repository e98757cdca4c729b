"""The discriminator head shared by both stages: minibatch features and matching-aware logits."""

from __future__ import annotations

import torch
from torch import nn

from .blocks import conv3x3
from .minibatch import MinibatchDiscrimination, MinibatchStdDev


class DiscriminatorHead(nn.Module):
    """4x4 image features + text -> logits, with an optional minibatch layer.

    Matching-aware (Reed et al. 2016): the conditional logit scores an (image, caption) pair,
    so the same image features are scored with the matching caption and a mismatched one.

    Args:
        channels:     C of the image features `[N, C, 4, 4]`.
        text_dim:     D of the text embeddings `[N, D]`.
        cond_dim:     size the text is compressed to before it is tiled over 4x4.
        minibatch:    "none", "mbd" (minibatch discrimination) or "mbstd" (minibatch stddev).
        mbd_kernels:  B, kernels of minibatch discrimination.
        mbd_dims:     C, dims per kernel of minibatch discrimination.
        unconditional: also return an unconditional logit (StackGAN's stage II D).
        norm:         "batch" (StackGAN: batch norm in the joint block), "spectral" (no batch
                      norm here; the owning discriminator spectrally normalises every layer) or
                      "none" (no batch norm).
        cond:         "concat" (StackGAN: the compressed text tiled over 4x4, concatenated to
                      the image features, conv, 4x4 conv to a logit) or "projection" (Miyato &
                      Koyama 2018: logit = w . phi(x) + <embed(text), phi(x)>, phi(x) the
                      sum-pooled image features).
        aux_classes:  > 0: also a linear classifier of the image alone over that many classes (an
                      auxiliary classifier as in AC-GAN; several attributes' classes side by side),
                      on phi(x) with the projection head, else on the sum-pooled features.
        aux_twin:     with aux_classes: also a twin classifier of the same shape (Twin Auxiliary
                      Classifiers GAN, Gong et al. 2019), trained on generated images to read the
                      classes they were asked for; `aux_twin_logits`.
    """

    def __init__(
        self,
        channels: int,
        text_dim: int,
        cond_dim: int,
        minibatch: str = "mbd",
        mbd_kernels: int = 100,
        mbd_dims: int = 5,
        unconditional: bool = False,
        norm: str = "batch",
        cond: str = "concat",
        aux_classes: int = 0,
        aux_twin: bool = False,
    ):
        super().__init__()
        if aux_twin and not aux_classes:
            raise ValueError("aux_twin needs an auxiliary classifier (aux_classes > 0)")
        if cond not in ("concat", "projection"):
            raise ValueError(f"cond must be 'concat' or 'projection', got {cond!r}")
        self.minibatch, self.cond = minibatch, cond
        extra = 0
        if minibatch == "mbd":
            self.mb: nn.Module | None = MinibatchDiscrimination(channels, mbd_kernels, mbd_dims)
            extra = mbd_kernels
        elif minibatch == "mbstd":
            self.mb = MinibatchStdDev()
            extra = 1
        elif minibatch == "none":
            self.mb = None
        else:
            raise ValueError(f"minibatch must be 'none', 'mbd' or 'mbstd', got {minibatch!r}")
        # The discriminator compresses the text itself (StackGAN reuses G's detached mu);
        # this keeps D a self-contained module.
        self.text_proj = nn.Sequential(nn.Linear(text_dim, cond_dim), nn.LeakyReLU(0.2, True))
        c = channels + extra
        bn = [nn.BatchNorm2d(channels)] if norm == "batch" else []
        if cond == "concat":
            self.joint = nn.Sequential(conv3x3(c + cond_dim, channels), *bn, nn.LeakyReLU(0.2, True))
            self.cond_out = nn.Conv2d(channels, 1, 4, 4)
        else:
            self.joint = nn.Sequential(conv3x3(c, channels), *bn, nn.LeakyReLU(0.2, True))
            self.cond_out = nn.Linear(channels, 1)
            self.text_embed = nn.Linear(cond_dim, channels, bias=False)
        self.uncond_out = nn.Conv2d(c, 1, 4, 4) if unconditional else None
        aux_in = channels if cond == "projection" else c
        self.aux_out = nn.Linear(aux_in, aux_classes) if aux_classes else None
        self.aux_twin_out = nn.Linear(aux_in, aux_classes) if aux_twin else None

    def image_features(self, h: torch.Tensor, group: int) -> torch.Tensor:
        """h `[N, C, 4, 4]` -> `[N, C + extra, 4, 4]` with the minibatch features appended."""
        if self.minibatch == "mbd":
            o = self.mb(h.mean(dim=(2, 3)), group)  # [N, B]
            return torch.cat([h, o[:, :, None, None].expand(-1, -1, h.shape[2], h.shape[3])], dim=1)
        if self.minibatch == "mbstd":
            return self.mb(h, group)
        return h

    def cond_logit(self, feats: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        if self.cond == "projection":
            phi = self._phi(feats)
            return (self.cond_out(phi) + (self.text_embed(self.text_proj(text)) * phi).sum(1, keepdim=True)).view(-1)
        c = self.text_proj(text)[:, :, None, None].expand(-1, -1, feats.shape[2], feats.shape[3])
        return self.cond_out(self.joint(torch.cat([feats, c], dim=1))).view(-1)

    def contrast_logits(self, feats: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
        """Projection term of every (image, caption) pair: feats `[N, C', 4, 4]`, texts `[M, D]` ->
        `[N, M]`, <embed(text_m), phi(x_n)> (the per-image term w . phi(x) is the same in every
        column, so a softmax over captions does not see it)."""
        if self.cond != "projection":
            raise ValueError("contrastive logits need the projection head (model.d_cond=projection)")
        return self._phi(feats) @ self.text_embed(self.text_proj(texts)).t()

    def _phi(self, feats: torch.Tensor) -> torch.Tensor:
        """The projection head's sum-pooled image features `[N, C]`."""
        return self.joint(feats).sum(dim=(2, 3))

    def aux_logits(self, feats: torch.Tensor) -> torch.Tensor | None:
        """Auxiliary class logits `[N, aux_classes]` of the image alone, or None without the classifier."""
        if self.aux_out is None:
            return None
        return self.aux_out(self._aux_features(feats))

    def aux_twin_logits(self, feats: torch.Tensor) -> torch.Tensor | None:
        """The twin classifier's logits `[N, aux_classes]` (Gong et al. 2019), or None without it."""
        if self.aux_twin_out is None:
            return None
        return self.aux_twin_out(self._aux_features(feats))

    def _aux_features(self, feats: torch.Tensor) -> torch.Tensor:
        return self._phi(feats) if self.cond == "projection" else feats.sum(dim=(2, 3))

    def uncond_logit(self, feats: torch.Tensor) -> torch.Tensor | None:
        return None if self.uncond_out is None else self.uncond_out(feats).view(-1)


class MatchingDiscriminator(nn.Module):
    """Base of both discriminators: an image encoder to 4x4 plus a `DiscriminatorHead`.

    `forward` scores real and fake batches in one call (so distributed training sees one
    forward per step) but encodes them separately: batch norm statistics and minibatch
    features never mix real and fake samples.
    """

    encoder: nn.Module
    head: DiscriminatorHead
    tower_in: nn.Module | None  # set by _tower_branch

    def _tower_branch(self, tower_channels: int, channels: int) -> None:
        """With `tower_channels` > 0 the discriminator also reads a frozen image tower's 4x4 feature
        map (given to `forward`; as GALIP reads CLIP's): a 1x1 conv maps it to the encoder's
        `channels`, added to the encoder's own features."""
        if tower_channels < 0:
            raise ValueError(f"tower_channels must be >= 0, got {tower_channels}")
        self.tower_in = (nn.Sequential(nn.Conv2d(tower_channels, channels, 1), nn.LeakyReLU(0.2, True))
                         if tower_channels else None)

    def forward(
        self,
        text: torch.Tensor,
        real: torch.Tensor | None = None,
        fake: torch.Tensor | None = None,
        wrong_text: torch.Tensor | None = None,
        group: int | None = None,
        real_tower: torch.Tensor | None = None,
        fake_tower: torch.Tensor | None = None,
        contrast_text: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Logits `[N]` for each pair it is given.

        Args:
            text:       `[N, D]` matching captions of `real` and `fake`.
            real:       `[N, 3, R, R]` real images in [-1, 1], or None.
            fake:       `[N, 3, R, R]` generated images, or None.
            wrong_text: `[N, D]` mismatched captions for `real` (needs `real`).
            group:      samples per minibatch group (None = the whole batch).
            real_tower, fake_tower: `[N, C_tower, 4, 4]` the image tower's features of `real` and
                        `fake`; required when the discriminator was built with a tower branch.
            contrast_text: `[M, D]` captions to score every given image against (projection
                        head only): adds real_contrast / fake_contrast, `[N, M]`.
        Returns:
            keys among real, wrong, fake (conditional logits), real_uncond, fake_uncond and, with the
            auxiliary classifier, real_aux, fake_aux (`[N, aux_classes]`), and with its twin
            fake_aux_twin.
        """
        out: dict[str, torch.Tensor] = {}
        for name, images, tower in (("real", real, real_tower), ("fake", fake, fake_tower)):
            if images is None:
                continue
            if images.dim() != 4 or images.shape[0] != text.shape[0]:
                raise ValueError(f"{name} images must be [N, 3, R, R] with N = {text.shape[0]}, got {tuple(images.shape)}")
            h = self.encoder(images)
            if self.tower_in is not None:
                if tower is None:
                    raise ValueError(f"this discriminator reads the image tower's features: pass {name}_tower "
                                     f"([N, C, {h.shape[2]}, {h.shape[3]}], TextEncoder.image_map of the {name} images)")
                h = h + self.tower_in(tower)
            elif tower is not None:
                raise ValueError(f"{name}_tower given, but this discriminator has no tower branch (model.d_tower off)")
            feats = self.head.image_features(h, group or images.shape[0])
            out[name] = self.head.cond_logit(feats, text)
            if contrast_text is not None:
                out[f"{name}_contrast"] = self.head.contrast_logits(feats, contrast_text)
            if name == "real" and wrong_text is not None:
                out["wrong"] = self.head.cond_logit(feats, wrong_text)
            aux = self.head.aux_logits(feats)
            if aux is not None:
                out[f"{name}_aux"] = aux
            twin = self.head.aux_twin_logits(feats) if name == "fake" else None
            if twin is not None:
                out["fake_aux_twin"] = twin
            uncond = self.head.uncond_logit(feats)
            if uncond is not None:
                out[f"{name}_uncond"] = uncond
        return out
