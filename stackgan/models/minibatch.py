"""Layers that let a discriminator see a whole minibatch, to fight mode collapse.

Both take a `group` argument: the batch `[N, ...]` is read as N // group contiguous groups
and samples are compared only within their group. Training batches hold groups of several
samples of one caption, so with group = samples per caption the discriminator sees
per-caption collapse (invisible across different captions); group = N compares the batch.
Callers never pass real and fake samples in one call.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _check_group(n: int, group: int) -> int:
    if group < 1 or n % group != 0:
        raise ValueError(f"batch of {n} cannot be split into groups of {group}; batch size must be a multiple of it")
    return group


class MinibatchDiscrimination(nn.Module):
    """Minibatch discrimination (Salimans et al. 2016, section 3.2).

    M_i = f(x_i) T, T in R^{A x B x C}; c_b(i, j) = exp(-||M_{i,b} - M_{j,b}||_1);
    o(x_i)_b = sum over the other samples j of i's group of c_b(i, j) (itself excluded).

    Args:
        in_features: A, size of the feature vector f(x) `[N, A]`.
        kernels:     B, number of similarity kernels (output features).
        dims:        C, dimension of each kernel's projection.
        reduce:      "sum" (the paper) or "mean" over the other samples (independent of group size).
    """

    def __init__(self, in_features: int, kernels: int = 100, dims: int = 5, reduce: str = "sum"):
        super().__init__()
        if reduce not in ("sum", "mean"):
            raise ValueError(f"reduce must be 'sum' or 'mean', got {reduce!r}")
        self.in_features, self.kernels, self.dims, self.reduce = in_features, kernels, dims, reduce
        # Scaled so that initial L1 distances are O(1): exp(-d) neither 0 nor 1 everywhere.
        self.T = nn.Parameter(torch.randn(in_features, kernels * dims) * (0.3 / math.sqrt(in_features)))
        self.bias = nn.Parameter(torch.zeros(kernels))

    def forward(self, x: torch.Tensor, group: int | None = None) -> torch.Tensor:
        """x `[N, A]` -> o(x) `[N, B]`; group defaults to the whole batch."""
        n = x.shape[0]
        g = _check_group(n, n if group is None else group)
        # Distances and exp in float32 even under autocast: bf16 erases small distances.
        with torch.autocast(device_type=x.device.type, enabled=False):
            m = (x.float() @ self.T.float()).view(n // g, g, self.kernels, self.dims)  # [G, g, B, C]
            dist = (m.unsqueeze(2) - m.unsqueeze(1)).abs().sum(-1)  # [G, g, g, B]
            sim = torch.exp(-dist) * (1.0 - torch.eye(g, device=x.device, dtype=dist.dtype))[None, :, :, None]
            o = sim.sum(2)  # [G, g, B]
            if self.reduce == "mean" and g > 1:
                o = o / (g - 1)
        return (o.reshape(n, self.kernels) + self.bias).to(x.dtype)


class MinibatchStdDev(nn.Module):
    """Minibatch standard deviation (Karras et al. 2018, section 3): one extra feature map.

    Within each group: population std of every feature over the group's samples, averaged
    over channels and positions, appended as a constant map `[N, 1, H, W]`.
    """

    def forward(self, x: torch.Tensor, group: int | None = None) -> torch.Tensor:
        """x `[N, C, H, W]` -> `[N, C + 1, H, W]`."""
        n, _, h, w = x.shape
        g = _check_group(n, n if group is None else group)
        y = x.float().reshape(n // g, g, -1)  # [G, g, C*H*W]
        # population variance written out: Tensor.var and its backward take a slow reduction path on CPU
        # (5x slower on a [16, 4, 4096] batch, forward + backward)
        var = (y - y.mean(dim=1, keepdim=True)).square().mean(dim=1)  # [G, C*H*W]
        std = (var + 1e-8).sqrt().mean(dim=1)  # [G]
        feat = std.repeat_interleave(g).view(n, 1, 1, 1).expand(n, 1, h, w).to(x.dtype)
        return torch.cat([x, feat], dim=1)
