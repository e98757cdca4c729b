"""The data-set contract every format implements, and the image helpers shared by all of them.

A data set is a list of images, each with one or more captions (and, for the built-in
`shapes` data set, its true attributes). Images leave a data set as uint8 tensors
`[3, H, W]` at the resolution the data set was built for; networks see floats in [-1, 1]
(`to_float` / `to_uint8` convert, both ways).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import torch


@runtime_checkable
class CaptionedImages(Protocol):
    """What training, evaluation and `stackgan data inspect` need from a data set."""

    name: str

    def __len__(self) -> int: ...

    def image(self, index: int, resolution: int) -> torch.Tensor:
        """Image `index` as uint8 `[3, resolution, resolution]`."""

    def captions(self, index: int) -> list[str]:
        """All captions of image `index` (at least one, none empty)."""


@dataclass
class SkipReport:
    """Files a loader passed over, by reason; summarised once instead of crashing mid-epoch."""

    skipped: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, path: str) -> None:
        self.skipped.setdefault(reason, []).append(str(path))

    @property
    def count(self) -> int:
        return sum(len(v) for v in self.skipped.values())

    def summary(self, first: int = 3) -> str:
        if not self.skipped:
            return "no files skipped"
        parts = []
        for reason, paths in sorted(self.skipped.items()):
            shown = ", ".join(paths[:first]) + (", ..." if len(paths) > first else "")
            parts.append(f"{len(paths)} {reason} ({shown})")
        return f"skipped {self.count} file(s): " + "; ".join(parts)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 `[N, 3, H, W]` in [0, 255] -> float `[N, 3, H, W]` in [-1, 1]."""
    if images.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images, got {images.dtype}")
    return images.float().div_(127.5).sub_(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float `[N, 3, H, W]` in [-1, 1] -> uint8 `[N, 3, H, W]` (values outside are clipped)."""
    if not images.is_floating_point():
        raise TypeError(f"expected float images in [-1, 1], got {images.dtype}")
    return images.detach().float().add(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8)


def make_grid(images: torch.Tensor, nrow: int, pad: int = 2, pad_value: int = 255) -> np.ndarray:
    """uint8 `[N, 3, H, W]` -> uint8 `[H', W', 3]` grid with `nrow` images per row."""
    import torchvision.utils

    grid = torchvision.utils.make_grid(images, nrow=nrow, padding=pad, pad_value=pad_value)
    return grid.permute(1, 2, 0).contiguous().numpy()


def caption_grid(images: torch.Tensor, captions: Sequence[str], nrow: int, width: int = 28):
    """A PIL image: a grid of uint8 `[N, 3, H, W]` images, each with its caption beneath."""
    import textwrap

    from PIL import Image, ImageDraw

    n, _, h, w = images.shape
    cell_w = max(w, 6 * width + 8)
    lines = [textwrap.wrap(c, width)[:4] for c in captions]
    text_h = 11 * max(len(x) for x in lines) + 6
    rows = (n + nrow - 1) // nrow
    canvas = Image.new("RGB", (nrow * cell_w, rows * (h + text_h)), "white")
    draw = ImageDraw.Draw(canvas)
    for k in range(n):
        x, y = (k % nrow) * cell_w, (k // nrow) * (h + text_h)
        canvas.paste(Image.fromarray(images[k].permute(1, 2, 0).numpy()), (x + (cell_w - w) // 2, y))
        for li, line in enumerate(lines[k]):
            draw.text((x + 4, y + h + 3 + 11 * li), line, fill=(0, 0, 0))
    return canvas
