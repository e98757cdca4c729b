"""`shapes`: a built-in captioned data set whose ground truth is known.

Each image holds one object with a shape, a colour, a size, a position on a 3x3 grid and a
background colour, plus continuous jitter (exact position, rotation) that no caption names.
Captions come from varied templates and synonyms and leave attributes out at random, so
one caption matches many different images: the conditional distribution a text-to-image
model has to cover. Everything is a deterministic function of (seed, split, index), at any
resolution.
"""

from __future__ import annotations

import logging
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

log = logging.getLogger(__name__)

SHAPES = ("circle", "square", "triangle", "diamond", "hexagon", "star")
COLOURS = {
    "red": (220, 30, 30),
    "orange": (245, 135, 20),
    "yellow": (245, 220, 30),
    "green": (40, 170, 60),
    "cyan": (30, 200, 215),
    "blue": (40, 80, 230),
    "purple": (140, 50, 190),
    "pink": (250, 130, 190),
}
BACKGROUNDS = {
    "white": (245, 245, 245),
    "black": (15, 15, 15),
    "gray": (128, 128, 128),
    "beige": (225, 205, 160),
    "navy": (20, 25, 75),
}
SIZES = ("small", "medium", "large")
POSITIONS = (
    "top left", "top", "top right",
    "left", "center", "right",
    "bottom left", "bottom", "bottom right",
)  # fmt: skip
# Radius of the object's circumscribed circle, as a fraction of the image side.
SIZE_RADIUS = {"small": 0.10, "medium": 0.14, "large": 0.185}

ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "colour": tuple(COLOURS),
    "size": SIZES,
    "position": POSITIONS,
    "background": tuple(BACKGROUNDS),
}

SYNONYMS = {
    "circle": ["circle", "disc", "round dot"],
    "square": ["square", "box", "block"],
    "triangle": ["triangle", "three-sided shape", "wedge"],
    "diamond": ["diamond", "rhombus", "lozenge"],
    "hexagon": ["hexagon", "six-sided shape", "hex"],
    "star": ["star", "five-pointed star", "starburst"],
    "red": ["red", "crimson", "scarlet"],
    "orange": ["orange", "tangerine"],
    "yellow": ["yellow", "golden", "lemon"],
    "green": ["green", "emerald", "grass-green"],
    "cyan": ["cyan", "turquoise", "aqua"],
    "blue": ["blue", "cobalt", "royal blue"],
    "purple": ["purple", "violet", "plum"],
    "pink": ["pink", "rose", "salmon pink"],
    "small": ["small", "tiny", "little"],
    "medium": ["medium", "medium-sized", "mid-sized"],
    "large": ["large", "big", "huge"],
    "white": ["white", "pale white", "snow-white"],
    "black": ["black", "coal-black", "jet-black"],
    "gray": ["gray", "grey", "slate"],
    "beige": ["beige", "sand", "cream"],
    "navy": ["navy", "dark blue", "midnight blue"],
}
POSITION_PHRASES = {
    "top left": ["in the top left corner", "upper left", "at the top left"],
    "top": ["at the top", "in the top middle", "near the top edge"],
    "top right": ["in the top right corner", "upper right", "at the top right"],
    "left": ["on the left", "at the left edge", "in the middle left"],
    "center": ["in the center", "in the middle", "at the centre"],
    "right": ["on the right", "at the right edge", "in the middle right"],
    "bottom left": ["in the bottom left corner", "lower left", "at the bottom left"],
    "bottom": ["at the bottom", "in the bottom middle", "near the bottom edge"],
    "bottom right": ["in the bottom right corner", "lower right", "at the bottom right"],
}
# How often a caption names each attribute.
MENTION_P = {"shape": 0.9, "colour": 0.85, "size": 0.55, "position": 0.6, "background": 0.5}
CAPTIONS_PER_IMAGE = 5
SPLIT_OFFSETS = {"train": 0, "test": 1_000_003}


@dataclass(frozen=True)
class Attributes:
    shape: str
    colour: str
    size: str
    position: str
    background: str
    dx: float  # jitter of the centre, fraction of a grid cell, in [-0.15, 0.15]
    dy: float
    rotation: float  # degrees, in [-15, 15]

    def named(self) -> dict[str, str]:
        return {k: getattr(self, k) for k in ATTRIBUTES}


def sample_attributes(rng: random.Random, fixed: dict[str, str] | None = None) -> Attributes:
    """Random attributes; the ones in `fixed` are kept. Background never equals the colour's look."""
    fixed = fixed or {}
    values = {k: fixed.get(k) or rng.choice(v) for k, v in ATTRIBUTES.items()}
    return Attributes(
        **values,
        dx=float(rng.uniform(-0.15, 0.15)),
        dy=float(rng.uniform(-0.15, 0.15)),
        rotation=float(rng.uniform(-15, 15)),
    )


def _polygon(shape: str, cx: float, cy: float, r: float, rot_deg: float) -> list[tuple[float, float]]:
    rot = math.radians(rot_deg)
    if shape == "square":
        angles, radii = [45, 135, 225, 315], [r * 0.92] * 4
    elif shape == "diamond":
        angles, radii = [0, 90, 180, 270], [r, r * 0.7, r, r * 0.7]
    elif shape == "triangle":
        angles, radii = [-90, 30, 150], [r] * 3
    elif shape == "hexagon":
        angles, radii = [0, 60, 120, 180, 240, 300], [r] * 6
    elif shape == "star":
        angles = [-90 + 36 * k for k in range(10)]
        radii = [r if k % 2 == 0 else r * 0.45 for k in range(10)]
    else:
        raise ValueError(shape)
    return [
        (cx + rr * math.cos(math.radians(a) + rot), cy + rr * math.sin(math.radians(a) + rot))
        for a, rr in zip(angles, radii)
    ]


def render(attrs: Attributes, resolution: int, supersample: int = 4) -> np.ndarray:
    """Draw one image: uint8 `[resolution, resolution, 3]`, antialiased by supersampling."""
    s = resolution * supersample
    img = Image.new("RGB", (s, s), BACKGROUNDS[attrs.background])
    draw = ImageDraw.Draw(img)
    row, col = divmod(POSITIONS.index(attrs.position), 3)
    cx = (col + 0.5 + attrs.dx) / 3 * s
    cy = (row + 0.5 + attrs.dy) / 3 * s
    r = SIZE_RADIUS[attrs.size] * s
    fill = COLOURS[attrs.colour]
    if attrs.shape == "circle":
        draw.ellipse([cx - r * 0.9, cy - r * 0.9, cx + r * 0.9, cy + r * 0.9], fill=fill)
    else:
        draw.polygon(_polygon(attrs.shape, cx, cy, r, attrs.rotation), fill=fill)
    return np.asarray(img.resize((resolution, resolution), Image.Resampling.BOX))


def make_caption(rng: random.Random, attrs: dict[str, str], mention: dict[str, bool] | None = None) -> str:
    """One caption naming the attributes selected by `mention` (random when None)."""
    if mention is None:
        mention = mention_of(rng)

    def syn(value: str) -> str:
        return rng.choice(SYNONYMS[value])

    size = syn(attrs["size"]) if mention.get("size") else ""
    colour = syn(attrs["colour"]) if mention.get("colour") else ""
    noun = syn(attrs["shape"]) if mention.get("shape") else rng.choice(["shape", "object", "figure"])
    where = rng.choice(POSITION_PHRASES[attrs["position"]]) if mention.get("position") else ""
    bg_word = syn(attrs["background"]) if mention.get("background") else ""
    phrase = " ".join(w for w in (size, colour, noun) if w)
    bg = ""
    if bg_word:
        bg = rng.choice([f"on a {bg_word} background", f"against {bg_word}", f"over a {bg_word} backdrop"])
    article = "an" if phrase[0] in "aeiou" else "a"
    form = rng.randrange(4)
    if form == 0:
        text = " ".join(w for w in (article, phrase, where, bg) if w)
    elif form == 1:
        text = ", ".join(w for w in (phrase, where, bg) if w)
    elif form == 2 and where:
        text = f"{where}: {article} {phrase}" + (f" {bg}" if bg else "")
    elif bg:
        text = f"{bg}, {article} {phrase}" + (f" {where}" if where else "")
    else:
        text = f"there is {article} {phrase}" + (f" {where}" if where else "")
    return text


def mention_of(rng: random.Random) -> dict[str, bool]:
    """Which attributes one caption names: each with its MENTION_P probability, at least one."""
    mention = {k: rng.random() < p for k, p in MENTION_P.items()}
    if not any(mention.values()):
        mention["shape"] = True
    return mention


class ShapesDataset:
    """The built-in data set. Implements `CaptionedImages`, plus true attributes and matching.

    Args:
        size:  number of images in this split.
        split: "train" or "test"; the two never share an index stream.
        seed:  everything (attributes, jitter, captions) is a function of (seed, split, index).
        cache_dir: where rendered images are cached (default `$STACKGAN_CACHE` or
                   `~/.cache/stackgan`); None-equivalent "" disables the disk cache.
    """

    name = "shapes"

    def __init__(self, size: int = 20000, split: str = "train", seed: int = 0, cache_dir: str | None = None):
        if split not in SPLIT_OFFSETS:
            raise ValueError(f"shapes split must be 'train' or 'test', got {split!r}")
        if size < 1:
            raise ValueError(f"shapes size must be >= 1, got {size}")
        self.size, self.split, self.seed = size, split, seed
        self.cache_dir = default_cache_dir() if cache_dir is None else cache_dir
        self._attrs: list[Attributes] = []
        self._captions: list[list[str]] = []
        self._mentions: list[list[dict[str, str]]] = []
        for i in range(size):
            rng = self._rng(i)
            a = sample_attributes(rng)
            named = a.named()
            caps, ments = [], []
            for _ in range(CAPTIONS_PER_IMAGE):
                m = mention_of(rng)
                caps.append(make_caption(rng, named, m))
                ments.append({k: named[k] for k, on in m.items() if on})
            self._attrs.append(a)
            self._captions.append(caps)
            self._mentions.append(ments)
        # Attribute value indices, [size] per attribute, for fast matching and probes.
        self.labels = {
            k: np.array([vals.index(getattr(a, k)) for a in self._attrs], dtype=np.int64) for k, vals in ATTRIBUTES.items()
        }
        self._images: dict[int, torch.Tensor] = {}

    def _rng(self, index: int) -> random.Random:
        return random.Random(self.seed * 2**32 + SPLIT_OFFSETS[self.split] + index)

    def __len__(self) -> int:
        return self.size

    def captions(self, index: int) -> list[str]:
        return list(self._captions[index])

    def caption_attributes(self, index: int) -> list[dict[str, str]]:
        """For each caption of image `index`, the attributes it names."""
        return [dict(m) for m in self._mentions[index]]

    def attributes(self, index: int) -> Attributes:
        return self._attrs[index]

    def matching(self, named: dict[str, str]) -> np.ndarray:
        """Indices of the images whose attributes agree with every attribute in `named`."""
        mask = np.ones(self.size, dtype=bool)
        for k, v in named.items():
            mask &= self.labels[k] == ATTRIBUTES[k].index(v)
        return np.nonzero(mask)[0]

    def images(self, resolution: int) -> torch.Tensor:
        """All images as uint8 `[size, 3, R, R]`, rendered once and cached (memory and disk)."""
        if resolution in self._images:
            return self._images[resolution]
        path = None
        if self.cache_dir:
            path = Path(self.cache_dir) / f"shapes-v1-{self.split}-s{self.seed}-n{self.size}-r{resolution}.npy"
            if path.exists():
                try:
                    arr = np.load(path, allow_pickle=False)
                    if arr.shape == (self.size, 3, resolution, resolution):
                        self._images[resolution] = torch.from_numpy(arr)
                        return self._images[resolution]
                except (OSError, ValueError):
                    log.warning("ignoring unreadable shapes cache %s", path)
        from tqdm.auto import tqdm

        arr = np.empty((self.size, 3, resolution, resolution), dtype=np.uint8)
        it = range(self.size)
        if self.size >= 2000:
            it = tqdm(it, desc=f"rendering shapes {self.split} {resolution}px", leave=False)
        for i in it:
            arr[i] = render(self._attrs[i], resolution).transpose(2, 0, 1)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
            np.save(tmp, arr)
            os.replace(tmp, path)
        self._images[resolution] = torch.from_numpy(arr)
        return self._images[resolution]

    def image(self, index: int, resolution: int) -> torch.Tensor:
        if resolution in self._images:
            return self._images[resolution][index]
        return torch.from_numpy(render(self._attrs[index], resolution).transpose(2, 0, 1).copy())


def default_cache_dir() -> str:
    return os.environ.get("STACKGAN_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "stackgan"))
