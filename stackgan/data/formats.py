"""Which layout a path holds, and one entry point that opens any of them.

    ds = open_dataset("path/to/data")                 # format detected
    ds = open_dataset("path/to/CUB", format="cub", split="test")

Formats live in a small registry (`FORMATS`, name -> loader, detector, example layout);
`register_format` adds one (the built-in `shapes` data set, a user's own layout). Detection
tries the registered formats in order, most specific first, so a CUB root that also happens
to hold `.txt` files beside images is recognised as CUB.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stackgan.data.base import CaptionedImages
from stackgan.data.coco import COCO_EXAMPLE, COCODataset
from stackgan.data.cub import CUB_EXAMPLE, CUBDataset
from stackgan.data.flowers import FLOWERS_EXAMPLE, FlowersDataset
from stackgan.data.folders import (
    IMAGEFOLDER_EXAMPLE,
    METADATA_NAMES,
    TXT_EXAMPLE,
    ImageFolderDataset,
    TxtPairsDataset,
    has_txt_pairs,
)
from stackgan.data.images import Preprocess

__all__ = ["FORMATS", "FormatSpec", "detect_format", "open_dataset", "register_format"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FormatSpec:
    """A data-set layout.

    loader:  (path, split=..., preprocess=..., **options) -> CaptionedImages
    detect:  path -> True when the path holds this layout (cheap: no image is opened).
    example: a few lines showing the layout, for error messages.
    """

    loader: Callable[..., CaptionedImages]
    detect: Callable[[Path], bool]
    example: str


def _is_coco(p: Path) -> bool:
    if p.is_file():
        return p.suffix.lower() == ".json"
    ann = p / "annotations" if (p / "annotations").is_dir() else p
    return any(ann.glob("captions_*.json"))


def _is_cub(p: Path) -> bool:
    if not p.is_dir():
        return False
    if (p / "CUB_200_2011").is_dir():
        return True
    return (p / "images.txt").is_file() and (p / "images").is_dir()


def _is_flowers(p: Path) -> bool:
    return p.is_dir() and (p / "jpg").is_dir() and (p / "text_c10").is_dir()


def _is_imagefolder(p: Path) -> bool:
    if not p.is_dir():
        return False
    dirs = [p] + [d for d in p.iterdir() if d.is_dir() and not d.name.startswith(".")]
    return any((d / n).is_file() for d in dirs for n in METADATA_NAMES)


def _is_txt(p: Path) -> bool:
    return p.is_dir() and has_txt_pairs(p)


# Order matters: detection takes the first match.
FORMATS: dict[str, FormatSpec] = {
    "coco": FormatSpec(COCODataset, _is_coco, COCO_EXAMPLE),
    "cub": FormatSpec(CUBDataset, _is_cub, CUB_EXAMPLE),
    "flowers": FormatSpec(FlowersDataset, _is_flowers, FLOWERS_EXAMPLE),
    "imagefolder": FormatSpec(ImageFolderDataset, _is_imagefolder, IMAGEFOLDER_EXAMPLE),
    "txt": FormatSpec(TxtPairsDataset, _is_txt, TXT_EXAMPLE),
}


def register_format(
    name: str, loader: Callable[..., CaptionedImages], detect: Callable[[Path], bool] | None = None, example: str = ""
) -> None:
    """Add (or replace) a format. Without `detect` it is only used when named explicitly."""
    FORMATS[name] = FormatSpec(loader, detect or (lambda p: False), example)


def _layouts_text() -> str:
    return "\n".join(f"- {name}:\n{spec.example}" for name, spec in FORMATS.items() if spec.example)


def detect_format(path: str | Path) -> str:
    """The name of the layout at `path` (a key of `FORMATS`).

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: no registered layout matches; the message lists the recognised layouts.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"data path {p} does not exist")
    for name, spec in FORMATS.items():
        if spec.detect(p):
            return name
    raise ValueError(
        f"cannot tell which data layout {p} holds. Recognised layouts "
        f"(or pass format=... explicitly, one of {', '.join(FORMATS)}):\n{_layouts_text()}"
    )


def open_dataset(
    path: str | Path,
    format: str = "auto",
    split: str = "train",
    preprocess: Preprocess | None = None,
    **options: Any,
) -> CaptionedImages:
    """Open the captioned images at `path`.

    Args:
        path: a folder (or, for COCO, a captions JSON file).
        format: "auto" (detect), or one of `FORMATS`: "imagefolder", "txt", "cub", "flowers",
            "coco".
        split: "train", "test" or "all" (user folders without split sub-folders give all
            their images for every split).
        preprocess: resize / crop / flip policy (default: centre crop, no flip).
        **options: passed on to the loader (`verify`, `max_pixels`, `workers`, COCO's
            `image_dir`, CUB's `crop_to_box`).

    Returns:
        A `CaptionedImages`; file-based ones carry `.skipped_report`.
    """
    p = Path(path).expanduser()
    if format == "auto":
        format = detect_format(p)
        log.info("%s: detected format %r", p, format)
    elif format not in FORMATS:
        raise ValueError(f"unknown data format {format!r}; known: {', '.join(FORMATS)} (or 'auto')")
    elif not p.exists():
        raise FileNotFoundError(f"data path {p} does not exist")
    return FORMATS[format].loader(p, split=split, preprocess=preprocess, **options)
