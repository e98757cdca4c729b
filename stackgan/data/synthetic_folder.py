"""A small captioned image folder of letters and digits, for trying the folder loaders and
the training pipeline on "someone else's" data without a download.

Unlike the built-in `shapes` data set this is written to disk in a user layout (Hugging Face
image folder or .txt pairs) and read back through the same loaders a user's photos go
through. Each image is one glyph (A-Z, 0-9) drawn with PIL's default font in one of eight
colours and three sizes, on a plain, striped, dotted or checkered background of another
colour; 2-3 captions per image from varied templates ("a large blue letter A on a yellow
background"). Deterministic from the seed.

    python -m stackgan.data.synthetic_folder OUT_DIR --n 1000 [--resolution 64] [--layout txt]
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import string
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["COLORS", "make_glyph_folder", "render_glyph", "main"]

log = logging.getLogger(__name__)

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (245, 215, 40),
    "purple": (140, 50, 170),
    "orange": (245, 130, 20),
    "white": (250, 250, 250),
    "black": (15, 15, 15),
}
SIZES = {"small": 0.38, "medium": 0.58, "large": 0.82}  # glyph height as a share of the image
PATTERNS = ("plain", "striped", "dotted", "checkered")
GLYPHS = string.ascii_uppercase + string.digits

_SIZE_WORDS = {
    "small": ("small", "little", "tiny"),
    "medium": ("medium", "medium-sized", "mid-sized"),
    "large": ("large", "big", "huge"),
}
_PATTERN_PHRASES = {
    "plain": ("a {bg} background", "plain {bg}", "a solid {bg} background"),
    "striped": ("{bg} stripes", "a {bg} striped background", "a background of {bg} stripes"),
    "dotted": ("{bg} polka dots", "a dotted {bg} background", "a {bg} background with dots"),
    "checkered": ("a {bg} checkerboard", "a checkered {bg} background", "{bg} checks"),
}
_TEMPLATES = (
    "a {size} {color} {kind} {g} on {bgp}",
    "the {kind} {g} in {color}, {size}, over {bgp}",
    "{color} {g} on {bgp}",
    "{bgp} with a {size} {color} {g}",
    "a {color} {kind} {g}",
    "{size} {color} {g}",
    "the {kind} {g} written in {color} on {bgp}",
)


@lru_cache(maxsize=64)
def _font(px: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=px)


def _glyph_mask(glyph: str, height: int) -> Image.Image:
    """An "L" mask of `glyph`, about `height` pixels tall, tightly cropped."""
    font = _font(max(4, int(height * 1.25)))  # the font's em box is taller than a capital
    canvas = Image.new("L", (height * 3, height * 3), 0)
    ImageDraw.Draw(canvas).text((height * 1.5, height * 1.5), glyph, fill=255, font=font, anchor="mm")
    bbox = canvas.getbbox() or (0, 0, 1, 1)
    mask = canvas.crop(bbox)
    if not isinstance(font, ImageFont.FreeTypeFont):
        # Pillow built without FreeType ignores the size: scale the small bitmap glyph up.
        mask = mask.resize((max(1, mask.width * height // mask.height), height), Image.Resampling.NEAREST)
    return mask


def _shade(rgb: tuple[int, int, int], amount: float) -> tuple[int, int, int]:
    """Lighter (amount > 0) or darker version of a colour, so a pattern keeps its colour name."""
    a = np.asarray(rgb, dtype=np.float64)
    out = a + (255 - a) * amount if amount > 0 else a * (1 + amount)
    return tuple(int(v) for v in np.clip(out, 0, 255))  # type: ignore[return-value]


def _background(res: int, rgb: tuple[int, int, int], pattern: str, rng: np.random.Generator) -> np.ndarray:
    base = np.empty((res, res, 3), np.uint8)
    base[:] = rgb
    if pattern == "plain":
        return base
    other = np.asarray(_shade(rgb, 0.45 if sum(rgb) < 382 else -0.35), np.uint8)
    period = max(2, int(res * rng.uniform(0.08, 0.16)))
    y, x = np.mgrid[0:res, 0:res]
    if pattern == "striped":
        axis = int(rng.integers(3))  # horizontal, vertical, diagonal
        coord = (y, x, x + y)[axis]
        on = (coord // period) % 2 == 1
    elif pattern == "checkered":
        on = ((x // period) + (y // period)) % 2 == 1
    else:  # dotted
        cy, cx = (y % (2 * period)) - period, (x % (2 * period)) - period
        on = cy * cy + cx * cx <= (period * 0.45) ** 2
    base[on] = other
    return base


def render_glyph(
    glyph: str, color: str, size: str, background: str, pattern: str, resolution: int, rng: np.random.Generator
) -> Image.Image:
    """One RGB image `resolution` x `resolution`; `rng` jitters the position and pattern."""
    img = Image.fromarray(_background(resolution, COLORS[background], pattern, rng))
    mask = _glyph_mask(glyph, max(4, int(resolution * SIZES[size])))
    w, h = mask.size
    if w > resolution or h > resolution:
        mask = mask.resize((min(w, resolution), min(h, resolution)))
        w, h = mask.size
    x = int(rng.integers(0, resolution - w + 1))
    y = int(rng.integers(0, resolution - h + 1))
    img.paste(Image.new("RGB", (w, h), COLORS[color]), (x, y), mask)
    return img


def _captions(attrs: dict[str, str], rng: np.random.Generator) -> list[str]:
    kind = "digit" if attrs["glyph"].isdigit() else "letter"
    k = int(rng.integers(2, 4))
    chosen = rng.choice(len(_TEMPLATES), size=k, replace=False)
    out = []
    for t in chosen:
        words = _SIZE_WORDS[attrs["size"]]
        phrases = _PATTERN_PHRASES[attrs["pattern"]]
        out.append(
            _TEMPLATES[int(t)].format(
                size=words[int(rng.integers(len(words)))],
                color=attrs["color"],
                kind=kind,
                g=attrs["glyph"],
                bgp=phrases[int(rng.integers(len(phrases)))].format(bg=attrs["background"]),
            )
        )
    # "a orange" -> "an orange"; lower case only, so the glyph "A" is never touched.
    return [re.sub(r"\ba (?=[aeiou])", "an ", c) for c in out]


def make_glyph_folder(
    out_dir: str | Path, n: int = 1000, resolution: int = 64, seed: int = 0, layout: str = "imagefolder"
) -> Path:
    """Write `n` captioned glyph images to `out_dir` and return it.

    layout "imagefolder": `out_dir/metadata.jsonl` (file_name, text = list of captions, and the
    true attributes glyph/color/size/background/pattern) with images in `out_dir/images/`.
    layout "txt": `out_dir/00000.png` beside `out_dir/00000.txt` (one caption per line).
    The same seed writes the same files.
    """
    if layout not in ("imagefolder", "txt"):
        raise ValueError(f'layout must be "imagefolder" or "txt", got {layout!r}')
    if n < 1 or resolution < 8:
        raise ValueError(f"need n >= 1 and resolution >= 8, got n={n}, resolution={resolution}")
    out = Path(out_dir)
    img_dir = out / "images" if layout == "imagefolder" else out
    img_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = list(COLORS)
    rows: list[dict[str, Any]] = []
    width = max(5, len(str(n - 1)))
    for i in range(n):
        color = names[int(rng.integers(len(names)))]
        others = [c for c in names if c != color]  # never a glyph in its background's colour
        background = others[int(rng.integers(len(others)))]
        attrs = {
            "glyph": GLYPHS[int(rng.integers(len(GLYPHS)))],
            "color": color,
            "size": list(SIZES)[int(rng.integers(len(SIZES)))],
            "background": background,
            "pattern": PATTERNS[int(rng.integers(len(PATTERNS)))],
        }
        img = render_glyph(attrs["glyph"], color, attrs["size"], background, attrs["pattern"], resolution, rng)
        caps = _captions(attrs, rng)
        name = f"{i:0{width}d}.png"
        # compress_level 1: these files are tiny and speed matters more than bytes.
        img.save(img_dir / name, compress_level=1)
        if layout == "txt":
            (out / f"{i:0{width}d}.txt").write_text("\n".join(caps) + "\n", encoding="utf-8")
        else:
            rows.append({"file_name": f"images/{name}", "text": caps, **attrs})
    if layout == "imagefolder":
        with (out / "metadata.jsonl").open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
    log.info("wrote %d glyph images (%s layout) to %s", n, layout, out)
    return out


def main(argv: list[str] | None = None) -> None:
    """Command line: write a glyph folder."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], prog="python -m stackgan.data.synthetic_folder"
    )
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--n", type=int, default=1000, help="number of images")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--layout", choices=("imagefolder", "txt"), default="imagefolder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    make_glyph_folder(args.out_dir, n=args.n, resolution=args.resolution, seed=args.seed, layout=args.layout)


if __name__ == "__main__":
    main()
