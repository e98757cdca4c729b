"""Data sets: the built-in `shapes` and users' captioned image folders (see `formats`)."""

from __future__ import annotations

from .base import CaptionedImages, SkipReport, caption_grid, make_grid, to_float, to_uint8

__all__ = ["CaptionedImages", "SkipReport", "build_dataset", "caption_grid", "make_grid", "to_float", "to_uint8"]


def build_dataset(data_cfg, split: str = "train"):
    """A `CaptionedImages` data set from the `data` section of a training config."""
    if data_cfg.name == "shapes":
        from .shapes import ShapesDataset

        size = data_cfg.size if split == "train" else data_cfg.test_size
        return ShapesDataset(size=size, split=split, seed=data_cfg.seed)
    from .formats import open_dataset
    from .images import Preprocess

    return open_dataset(data_cfg.path, format=data_cfg.format, split=split,
                        preprocess=Preprocess(resize=data_cfg.resize, flip=data_cfg.flip))
