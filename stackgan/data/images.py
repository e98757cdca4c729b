"""Robust image loading and the preprocessing policies shared by every file-based data set.

Users' folders hold whatever cameras, scanners and image editors produce: EXIF-rotated JPEGs,
transparent PNGs, palette GIFs, CMYK print files, 16-bit scans, truncated downloads and, now
and then, a decompression bomb. `load_rgb` turns all of them into 8-bit RGB or raises one
exception type, `ImageLoadError`, whose `reason` is a short phrase that goes straight into a
`SkipReport`. `preprocess` then resizes and crops to a square uint8 tensor `[3, R, R]`.
"""

from __future__ import annotations

import random as _pyrandom
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "REASON_BOMB",
    "REASON_CORRUPT",
    "REASON_MISSING",
    "REASON_TOO_SMALL",
    "REASON_UNREADABLE",
    "check_pixels",
    "exif_orientation",
    "open_image",
    "IMAGE_EXTENSIONS",
    "ImageLoadError",
    "Preprocess",
    "Rng",
    "is_image_file",
    "load_rgb",
    "open_header",
    "preprocess",
    "random_resize_size",
    "to_rgb",
]

# PIL's own default (Image.MAX_IMAGE_PIXELS): about 89.5M pixels, a 1024x1024x24 bit image
# expanded 85 times. We apply our own limit instead of editing PIL's global, so that two data
# sets with different limits can live in one process.
DEFAULT_MAX_PIXELS = int(1024 * 1024 * 1024 // 4 // 3)

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pnm"}
)

# Skip reasons, as they appear in SkipReport; kept as constants so tests and reports agree.
REASON_MISSING = "missing file"
REASON_UNREADABLE = "unreadable"
REASON_CORRUPT = "corrupt or truncated"
REASON_TOO_SMALL = "too small"
REASON_BOMB = "decompression bomb"

Rng = np.random.Generator | _pyrandom.Random

_EXIF_ORIENTATION = 0x0112
_WARNINGS_LOCK = threading.Lock()


class ImageLoadError(Exception):
    """An image that cannot be used; `reason` is a short phrase for a `SkipReport`."""

    def __init__(self, path: str | Path, reason: str, detail: str = "") -> None:
        self.path = str(path)
        self.reason = reason
        self.detail = detail
        super().__init__(f"{self.path}: {reason}" + (f" ({detail})" if detail else ""))

    def __reduce__(self):  # picklable across DataLoader worker processes
        return (type(self), (self.path, self.reason, self.detail))


def is_image_file(path: str | Path) -> bool:
    """True when the file name has an image extension we try to read."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def check_pixels(path: str | Path, size: tuple[int, int], max_pixels: int | None) -> None:
    """Raise `ImageLoadError("decompression bomb")` when `size` has more than `max_pixels` pixels."""
    if max_pixels is not None and size[0] * size[1] > max_pixels:
        raise ImageLoadError(
            path, REASON_BOMB, f"{size[0]}x{size[1]} = {size[0] * size[1]} pixels > limit {max_pixels}"
        )


def open_image(path: str | Path, max_pixels: int | None) -> Image.Image:
    """`Image.open` with every failure mapped onto `ImageLoadError`; reads the header only.

    The caller closes the image. Raises for missing and unidentifiable files and for images
    over `max_pixels`.
    """
    try:
        # PIL warns above its own global limit; our `max_pixels` is the limit that counts.
        # catch_warnings edits process-wide state, so scan threads take turns (header parsing
        # is cheap; decoding, the expensive part, stays parallel).
        with _WARNINGS_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
    except FileNotFoundError as e:
        raise ImageLoadError(path, REASON_MISSING) from e
    except Image.DecompressionBombError as e:
        raise ImageLoadError(path, REASON_BOMB, str(e)) from e
    except Exception as e:  # noqa: BLE001 - PIL's plugins raise many types on hostile bytes
        raise ImageLoadError(path, REASON_UNREADABLE, f"{type(e).__name__}: {e}") from e
    try:
        check_pixels(path, img.size, max_pixels)
    except ImageLoadError:
        img.close()
        raise
    return img


def exif_orientation(img: Image.Image, header_only: bool = False) -> int:
    """EXIF orientation tag (1 = upright; 5..8 swap width and height); 1 when absent or broken.

    With `header_only`, never decodes pixels: PNG's `getexif` loads the whole image to look
    for an eXIf chunk after the pixel data, and on a truncated file that partial load
    would also hide the truncation from a later `load()`.
    """
    if header_only and img.format == "PNG" and "exif" not in img.info:
        return 1
    try:
        return int(img.getexif().get(_EXIF_ORIENTATION, 1) or 1)
    except Exception:  # malformed EXIF is common and harmless: treat it as upright
        return 1


def open_header(path: str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """Display size `(width, height)` of an image from its header alone (EXIF rotation applied).

    Raises `ImageLoadError` for missing, unidentifiable or over-large files. Cheap: decodes no
    pixels, so it does not detect truncation (`load_rgb` does).
    """
    with open_image(path, max_pixels) as img:
        w, h = img.size
        # Orientations 5..8 swap the axes.
        return (h, w) if exif_orientation(img, header_only=True) in (5, 6, 7, 8) else (w, h)


def _composite_on_white(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _high_bit_depth_to_rgb(img: Image.Image) -> Image.Image:
    """16/32-bit integer or float grayscale -> 8-bit RGB."""
    arr = np.asarray(img)
    if img.mode.startswith("I;16"):
        arr8 = arr.astype(np.float64) / 257.0  # 65535 -> 255
    elif img.mode == "F":
        a = arr.astype(np.float64)
        # Floats in [0, 1] are the common convention; anything else is taken as 0..255.
        arr8 = a * 255.0 if np.nanmax(a, initial=0.0) <= 1.0 else a
        arr8 = np.nan_to_num(arr8)
    else:  # "I": 32-bit signed; 16-bit PNGs open in this mode with some Pillow versions
        a = arr.astype(np.float64)
        peak = float(a.max(initial=0))
        arr8 = a if peak <= 255 else a / 257.0 if peak <= 65535 else a * (255.0 / peak)
    arr8 = np.clip(np.rint(arr8), 0, 255).astype(np.uint8)
    return Image.fromarray(arr8, mode="L").convert("RGB")


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB; transparency is composited on white."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode in ("P", "L", "RGB", "1") and "transparency" in img.info):
        return _composite_on_white(img)
    if mode.startswith("I") or mode == "F":
        return _high_bit_depth_to_rgb(img)
    # P, L, 1, CMYK, YCbCr, LAB, HSV, RGBX: PIL knows these conversions.
    return img.convert("RGB")


def load_rgb(
    path: str | Path,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    draft: int | None = None,
) -> Image.Image:
    """Load an image file as an 8-bit RGB PIL image, upright per its EXIF orientation.

    Args:
        path: image file.
        max_pixels: refuse images with more pixels than this (decompression bombs); None = no
            limit of ours (PIL's global limit still applies).
        draft: when set, JPEGs may be decoded at a reduced scale (libjpeg's DCT scaling) as
            long as both sides stay >= `draft`; several times faster for large photos.

    Raises:
        ImageLoadError: missing, unidentifiable, corrupt, truncated or over-large files; its
            `reason` is one of "missing file", "unreadable", "corrupt or truncated",
            "decompression bomb".
    """
    img = open_image(path, max_pixels)
    try:
        if draft is not None and img.format == "JPEG":
            try:
                img.draft("RGB", (draft, draft))
            except Exception:  # draft is an optimisation only
                pass
        try:
            # load() inside the try: Image.open only parses the header, truncation shows here.
            img.load()
        except Image.DecompressionBombError as e:
            raise ImageLoadError(path, REASON_BOMB, str(e)) from e
        except Exception as e:  # noqa: BLE001 - truncated or corrupt data: OSError, struct.error, ...
            raise ImageLoadError(path, REASON_CORRUPT, f"{type(e).__name__}: {e}") from e
        try:
            upright = ImageOps.exif_transpose(img)
        except Exception:  # malformed EXIF: keep the pixels as stored
            upright = img
        try:
            out = to_rgb(upright)
        except Exception as e:  # noqa: BLE001
            raise ImageLoadError(path, REASON_CORRUPT, f"{type(e).__name__}: {e}") from e
        # `img` is closed below; never hand it out itself.
        return out.copy() if out is img else out
    finally:
        img.close()


@dataclass
class Preprocess:
    """How a file-based data set turns an image into a square `[3, R, R]` tensor.

    resize:   "center": shorter side to R, centre crop (evaluation, inspection);
              "random": StackGAN's training policy, shorter side to int(R * 76 / 64), then a
              random R x R crop.
    flip:     horizontal flip with probability 0.5.
    min_size: images whose shorter side is below this are refused ("too small").
    seed:     seeds a data set's own generator for "random" crops and flips, so that a data
              set built with the same seed yields the same augmentations.
    """

    resize: str = "center"
    flip: bool = False
    min_size: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.resize not in ("center", "random"):
            raise ValueError(f'Preprocess.resize must be "center" or "random", got {self.resize!r}')
        if self.min_size < 0:
            raise ValueError(f"Preprocess.min_size must be >= 0, got {self.min_size}")

    @property
    def is_random(self) -> bool:
        """True when the output depends on a random generator."""
        return self.resize == "random" or self.flip

    def load_size(self, resolution: int) -> int:
        """The shorter side an image needs before cropping: enough to decode JPEGs in draft mode."""
        side = random_resize_size(resolution) if self.resize == "random" else resolution
        return max(side, self.min_size)


def random_resize_size(resolution: int) -> int:
    """StackGAN's pre-crop size: int(R * 76 / 64) (76 for 64 px, 304 for 256 px)."""
    return int(resolution * 76 / 64)


def _randint(rng: Rng, high: int) -> int:
    """Uniform integer in [0, high]."""
    if high <= 0:
        return 0
    if isinstance(rng, np.random.Generator):
        return int(rng.integers(0, high + 1))
    return rng.randint(0, high)


def _coin(rng: Rng) -> bool:
    return bool(rng.random() < 0.5)


def _resize_shorter(img: Image.Image, side: int) -> Image.Image:
    w, h = img.size
    if min(w, h) == side:
        return img
    scale = side / min(w, h)
    # Round, but never below `side`, so the crop that follows always fits.
    new = (max(side, round(w * scale)), max(side, round(h * scale)))
    # PIL's bicubic widens its kernel when shrinking, i.e. it antialiases; reducing_gap first
    # shrinks large images by an integer factor, which is much faster and visually identical.
    return img.resize(new, Image.Resampling.BICUBIC, reducing_gap=3.0)


def preprocess(
    img: Image.Image,
    resolution: int,
    policy: Preprocess | None = None,
    rng: Rng | None = None,
) -> torch.Tensor:
    """An RGB PIL image -> uint8 tensor `[3, resolution, resolution]` under `policy`.

    `rng` (numpy Generator or `random.Random`) drives random crops and flips; the same seeded
    generator gives the same output. Without one, a fresh unseeded generator is used.

    Raises:
        ImageLoadError: reason "too small" when the shorter side is below `policy.min_size`.
    """
    policy = policy or Preprocess()
    if resolution <= 0:
        raise ValueError(f"resolution must be positive, got {resolution}")
    if min(img.size) < policy.min_size:
        raise ImageLoadError(
            getattr(img, "filename", "") or "<image>",
            REASON_TOO_SMALL,
            f"{img.size[0]}x{img.size[1]}, shorter side < min_size {policy.min_size}",
        )
    if img.mode != "RGB":
        img = to_rgb(img)
    if policy.is_random and rng is None:
        rng = np.random.default_rng()

    if policy.resize == "random":
        img = _resize_shorter(img, random_resize_size(resolution))
        w, h = img.size
        x0, y0 = _randint(rng, w - resolution), _randint(rng, h - resolution)  # type: ignore[arg-type]
    else:
        img = _resize_shorter(img, resolution)
        w, h = img.size
        x0, y0 = (w - resolution) // 2, (h - resolution) // 2
    img = img.crop((x0, y0, x0 + resolution, y0 + resolution))
    if policy.flip and _coin(rng):  # type: ignore[arg-type]
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)

    arr = np.asarray(img, dtype=np.uint8)  # [R, R, 3]
    # The transposing copy in numpy: cheaper than torch's for one small image.
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))  # [3, R, R]
