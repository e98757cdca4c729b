"""Users' own captioned image folders, and the machinery every file-based format shares.

Two layouts:

* Hugging Face image folder (`ImageFolderDataset`)::

      my_data/                      or   my_data/train/
        metadata.jsonl                     metadata.jsonl
        images/0001.jpg                    0001.jpg
      {"file_name": "images/0001.jpg", "text": "a red bird on a branch"}
      {"file_name": "images/0002.jpg", "text": ["a cat", "a sleeping cat"]}

  or `metadata.csv` with columns `file_name,text` (a list of captions may be written as a
  JSON list in the `text` cell).

* Caption files beside images (`TxtPairsDataset`), searched recursively::

      my_data/a/0001.jpg   my_data/a/0001.txt   (one caption per line, blank lines ignored)

`FileCaptionDataset` is the base every file-based format (also CUB, Oxford-102, COCO) builds
on: a format parses its layout into candidate `Entry`s; the base scans the images once
(header plus full decode, in threads), records everything unusable in a `SkipReport`, warns
once, and refuses to build an empty data set with a message that shows the expected layout.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import pickle
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from stackgan.data.base import SkipReport
from stackgan.data.images import (
    DEFAULT_MAX_PIXELS,
    REASON_BOMB,
    REASON_CORRUPT,
    REASON_MISSING,
    REASON_TOO_SMALL,
    ImageLoadError,
    Preprocess,
    Rng,
    exif_orientation,
    is_image_file,
    load_rgb,
    open_image,
)
from stackgan.data.images import (
    preprocess as preprocess_image,
)

__all__ = [
    "Entry",
    "FileCaptionDataset",
    "ImageFolderDataset",
    "TxtPairsDataset",
    "class_split",
    "crop_box",
    "load_name_list",
    "read_caption_file",
]

log = logging.getLogger(__name__)

REASON_NO_CAPTION = "no caption"
REASON_EMPTY_CAPTION = "empty caption"
REASON_DUPLICATE = "duplicate file name"
REASON_BAD_METADATA = "bad metadata row"

METADATA_NAMES = ("metadata.jsonl", "metadata.csv")
TEXT_KEYS = ("text", "caption", "captions")

IMAGEFOLDER_EXAMPLE = """\
  my_data/metadata.jsonl    (or my_data/train/metadata.jsonl, or metadata.csv)
      {"file_name": "0001.jpg", "text": "a red bird on a branch"}
      {"file_name": "0002.jpg", "text": ["a cat", "a sleeping cat"]}
  my_data/0001.jpg
  my_data/0002.jpg"""

TXT_EXAMPLE = """\
  my_data/0001.jpg   my_data/0001.txt   (one caption per line)
  my_data/sub/0002.png   my_data/sub/0002.txt"""


@dataclass
class Entry:
    """One candidate image of a file-based data set.

    path:     image file.
    captions: its non-empty captions.
    box:      optional bounding box (x, y, w, h) in stored pixels; the image is cropped to
              StackGAN's square around it (`crop_box`) before preprocessing.
    size:     (width, height) as displayed (EXIF rotation applied), filled in by the scan.
    """

    path: Path
    captions: list[str]
    box: tuple[float, float, float, float] | None = None
    size: tuple[int, int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def crop_box(size: tuple[int, int], box: tuple[float, float, float, float]) -> tuple[int, int, int, int]:
    """StackGAN's object-centred crop: (left, top, right, bottom) of a square of side
    2 * int(0.75 * max(w, h)) (1.5 x the box's longer side) around the box centre, clipped to
    the image (so near the border it is no longer square).
    """
    width, height = size
    x, y, w, h = box
    r = int(np.maximum(w, h) * 0.75)
    cx, cy = int((2 * x + w) / 2), int((2 * y + h) / 2)
    left, top = max(0, cx - r), max(0, cy - r)
    right, bottom = min(width, cx + r), min(height, cy + r)
    if right <= left or bottom <= top:  # a box outside the image: use the whole image
        return 0, 0, width, height
    return left, top, right, bottom


def clean_captions(texts: Iterable[Any]) -> list[str]:
    """Strings only, whitespace stripped, blanks dropped."""
    return [t.strip() for t in texts if isinstance(t, str) and t.strip()]


def read_caption_file(path: Path) -> list[str]:
    """Captions of a text file: one per line, blank lines ignored (BOM and CRLF tolerated)."""
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    return clean_captions(text.splitlines())


def _scan_one(
    entry: Entry, verify: str, min_size: int, max_pixels: int | None
) -> tuple[str | None, tuple[int, int] | None]:
    """(skip reason or None, display size) for one candidate."""
    path = entry.path
    if verify == "none":
        return (None, None) if path.is_file() else (REASON_MISSING, None)
    try:
        img = open_image(path, max_pixels)
    except ImageLoadError as e:
        return e.reason, None
    try:
        stored = img.size
        usable = stored  # rotation does not change the shorter side
        if entry.box is not None:
            left, top, right, bottom = crop_box(stored, entry.box)
            usable = (right - left, bottom - top)
        if min(usable) < min_size:
            return REASON_TOO_SMALL, stored
        if verify == "full":
            if img.format == "JPEG":
                # Decoding at 1/8 scale still reads every entropy-coded byte, so truncation is
                # still caught, at a fraction of the cost.
                try:
                    img.draft("RGB", (max(1, stored[0] // 8), max(1, stored[1] // 8)))
                except Exception:
                    pass
            try:
                img.load()
            except Image.DecompressionBombError:
                return REASON_BOMB, stored
            except Exception:
                return REASON_CORRUPT, stored
        # Only after load(): see exif_orientation.
        rotated = exif_orientation(img, header_only=verify != "full") in (5, 6, 7, 8)
        return None, (stored[1], stored[0]) if rotated else stored
    finally:
        img.close()


class FileCaptionDataset:
    """Base of every file-based data set: entries, a scan, preprocessing and safe loading.

    Subclasses parse their layout into candidate `Entry`s and call `_build(candidates)`.
    Implements the `CaptionedImages` contract.
    """

    name: str
    layout_example: str = ""

    def __init__(
        self,
        root: str | Path,
        preprocess: Preprocess | None = None,
        verify: str = "full",
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        workers: int | None = None,
    ) -> None:
        """
        root:       folder (or file) the data set was read from.
        preprocess: resize / crop / flip policy; default centre crop, no flip.
        verify:     "full" decodes every image once at construction (catches truncation),
                    "header" reads headers only (faster on huge sets), "none" only checks that
                    files exist.
        max_pixels: images with more pixels are skipped as decompression bombs.
        workers:    threads for the scan (PIL releases the GIL while decoding).
        """
        if verify not in ("full", "header", "none"):
            raise ValueError(f'verify must be "full", "header" or "none", got {verify!r}')
        self.root = Path(root)
        self.preprocess = preprocess or Preprocess()
        self.verify = verify
        self.max_pixels = max_pixels
        self.workers = workers or min(8, os.cpu_count() or 1)
        self.skipped_report = SkipReport()
        self.entries: list[Entry] = []
        self._redirect: dict[int, int] = {}
        self._bad: set[int] = set()
        self._rng: np.random.Generator | None = None
        self._rng_owner: Any = None

    # -- construction ------------------------------------------------------------------
    def _build(self, candidates: Sequence[Entry], what: str = "") -> None:
        """Scan `candidates`, keep the usable ones, warn once, refuse an empty result."""
        min_size = self.preprocess.min_size
        if len(candidates) > 1 and self.workers > 1:
            with ThreadPoolExecutor(self.workers) as pool:
                results = list(pool.map(lambda e: _scan_one(e, self.verify, min_size, self.max_pixels), candidates))
        else:
            results = [_scan_one(e, self.verify, min_size, self.max_pixels) for e in candidates]
        for entry, (reason, size) in zip(candidates, results, strict=True):
            if reason is not None:
                self.skipped_report.add(reason, str(entry.path))
                continue
            entry.size = size
            self.entries.append(entry)
        if self.skipped_report.count:
            log.warning("%s: %s", self.name, self.skipped_report.summary())
        if not self.entries:
            found = f"found {len(candidates)} candidate image(s)" + (
                f", {self.skipped_report.summary()}" if self.skipped_report.count else ""
            )
            raise ValueError(
                f"no usable captioned images in {self.root}{' ' + what if what else ''}: {found}. "
                f"Expected a layout like:\n{self.layout_example}"
            )
        log.info("%s: %d images, %d captions", self.name, len(self.entries), self.num_captions)

    # -- the CaptionedImages contract ---------------------------------------------------
    def __len__(self) -> int:
        return len(self.entries)

    def captions(self, index: int) -> list[str]:
        """All captions of image `index` (of the image actually served, if it was replaced)."""
        self._check_index(index)
        return list(self.entries[self._redirect.get(index, index)].captions)

    def image(self, index: int, resolution: int, rng: Rng | None = None) -> torch.Tensor:
        """Image `index` as uint8 `[3, resolution, resolution]`.

        If the file became unreadable after the scan, the next readable image (index + 1, + 2,
        ... modulo len) is served instead, the problem is recorded in `skipped_report` and
        `captions(index)` follows the replacement from then on: an epoch never crashes on one
        bad file. `rng` overrides the data set's own generator for random crops and flips.
        """
        self._check_index(index)
        n = len(self.entries)
        start = self._redirect.get(index, index)
        for step in range(n):
            k = (start + step) % n
            if k in self._bad:
                continue
            try:
                img = self._load(k, resolution)
                out = preprocess_image(img, resolution, self.preprocess, rng or self._generator())
            except ImageLoadError as e:
                self._bad.add(k)
                self.skipped_report.add(f"{e.reason} after scan", str(self.entries[k].path))
                log.warning("%s: %s; serving another image in its place", self.name, e)
                continue
            if k != index:
                self._redirect[index] = k
            return out
        raise RuntimeError(f"{self.name}: none of the {n} images in {self.root} can be read any more")

    # -- helpers ----------------------------------------------------------------------
    def path(self, index: int) -> Path:
        """File of image `index`."""
        self._check_index(index)
        return self.entries[index].path

    def attributes(self, index: int) -> dict[str, Any]:
        """Extra per-image fields of the layout: CUB/Oxford-102 "class", COCO "coco_id", an
        image folder's other metadata columns (the glyph folder's true attributes)."""
        self._check_index(index)
        return dict(self.entries[index].extra)

    def image_size(self, index: int) -> tuple[int, int] | None:
        """(width, height) of image `index` as found by the scan (None when not verified)."""
        self._check_index(index)
        return self.entries[index].size

    @property
    def num_captions(self) -> int:
        """Total number of captions over all images."""
        return sum(len(e.captions) for e in self.entries)

    def _check_index(self, index: int) -> None:
        if not 0 <= index < len(self.entries):
            raise IndexError(f"index {index} out of range for {self.name} with {len(self.entries)} images")

    def _load(self, index: int, resolution: int) -> Image.Image:
        entry = self.entries[index]
        if entry.box is None:
            return load_rgb(entry.path, self.max_pixels, draft=self.preprocess.load_size(resolution))
        # Box coordinates refer to stored pixels: no draft scaling.
        img = load_rgb(entry.path, self.max_pixels)
        return img.crop(crop_box(img.size, entry.box))

    def _generator(self) -> np.random.Generator:
        """The data set's generator; re-seeded once per DataLoader worker so that workers
        do not repeat one another's augmentations (torch gives each worker its own seed)."""
        info = torch.utils.data.get_worker_info()
        owner = None if info is None else (os.getpid(), info.id)
        if self._rng is None or owner != self._rng_owner:
            seed = [self.preprocess.seed] + ([] if info is None else [info.seed % (2**63)])
            self._rng = np.random.default_rng(seed)
            self._rng_owner = owner
        return self._rng

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, images={len(self)}, skipped={self.skipped_report.count})"
        )


# ---------------------------------------------------------------------------------------
# Hugging Face image folder
# ---------------------------------------------------------------------------------------


def _metadata_file(folder: Path) -> Path | None:
    found = [folder / n for n in METADATA_NAMES if (folder / n).is_file()]
    if len(found) > 1:
        log.warning("%s has both metadata.jsonl and metadata.csv; using metadata.jsonl", folder)
    return found[0] if found else None


_SPLIT_ALIASES = {"train": ("train",), "test": ("test", "validation", "val"), "validation": ("validation", "val")}


def find_metadata(root: Path, split: str = "train") -> list[Path]:
    """Metadata files of an image folder for `split`: `root/<split>/metadata.*` when that
    exists, else `root/metadata.*`; "all" takes every one of them."""
    sub_files = (
        [m for d in sorted(p for p in root.iterdir() if p.is_dir()) if (m := _metadata_file(d)) is not None]
        if root.is_dir()
        else []
    )
    top = _metadata_file(root) if root.is_dir() else None
    if split == "all":
        return ([top] if top else []) + sub_files
    for alias in _SPLIT_ALIASES.get(split, (split,)):
        m = _metadata_file(root / alias)
        if m is not None:
            return [m]
    if top is not None:
        if split != "train":
            log.info("%s has no %s/ split folder; using all of %s", root, split, top.name)
        return [top]
    return []


def _parse_text(value: Any) -> list[Any] | None:
    """`text` cell -> list of candidate captions (None when absent)."""
    if value is None:
        return None
    if isinstance(value, list):
        return value
    if isinstance(value, str):
        s = value.strip()
        if s.startswith("[") and s.endswith("]"):
            try:
                parsed = json.loads(s)
                if isinstance(parsed, list):
                    return parsed
            except json.JSONDecodeError:
                pass  # a caption that merely looks like a list: keep it as text
        return [value]
    return [value]


def _usable_name(name: Any) -> bool:
    """False for a file name no file system can hold (a NUL byte, an unencodable lone surrogate)."""
    name = str(name)
    if "\x00" in name:
        return False
    try:
        os.fsencode(name)
    except UnicodeError:
        return False
    return True


def _read_metadata_rows(meta: Path, report: SkipReport) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    if meta.suffix == ".jsonl":
        with meta.open(encoding="utf-8-sig", errors="replace") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except (json.JSONDecodeError, RecursionError, ValueError):  # RecursionError: absurdly nested
                    report.add(REASON_BAD_METADATA, f"{meta}:{lineno}")
                    continue
                if not isinstance(row, dict) or not _usable_name(row.get("file_name", "")):
                    report.add(REASON_BAD_METADATA, f"{meta}:{lineno}")
                    continue
                row["_where"] = f"{meta}:{lineno}"
                rows.append(row)
    else:
        with meta.open(encoding="utf-8-sig", errors="replace", newline="") as f:
            reader = csv.DictReader(f)
            lineno = 1
            while True:
                lineno += 1
                try:
                    row = next(reader)
                except StopIteration:
                    break
                except csv.Error:  # e.g. a cell over the csv module's field size limit
                    report.add(REASON_BAD_METADATA, f"{meta}:{lineno}")
                    continue
                row = {(k or "").strip(): v for k, v in row.items()}
                if not _usable_name(row.get("file_name", "")):
                    report.add(REASON_BAD_METADATA, f"{meta}:{lineno}")
                    continue
                row["_where"] = f"{meta}:{lineno}"
                rows.append(row)
    return rows


def _unlisted_images(folder: Path, listed: set[Path], skip_dirs: set[Path]) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        d = Path(dirpath)
        # Hidden folders (.git, .ipynb_checkpoints) and folders with their own metadata are not ours.
        dirnames[:] = sorted(n for n in dirnames if not n.startswith(".") and (d / n) not in skip_dirs)
        for name in sorted(filenames):
            p = d / name
            if not name.startswith(".") and is_image_file(p) and p.resolve() not in listed:
                out.append(p)
    return out


class ImageFolderDataset(FileCaptionDataset):
    """A Hugging Face style image folder: `metadata.jsonl` / `metadata.csv` with `file_name`
    and `text` (a string or a list of strings), at the root or in a split folder (`train/`).
    Images in the folder that the metadata does not list are reported as "no caption".
    """

    layout_example = IMAGEFOLDER_EXAMPLE

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        preprocess: Preprocess | None = None,
        verify: str = "full",
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        workers: int | None = None,
    ) -> None:
        """root: the folder; split: "train", "test", "validation" or "all" (see `find_metadata`);
        the other arguments as in `FileCaptionDataset`."""
        super().__init__(root, preprocess, verify, max_pixels, workers)
        self.split = split
        self.name = f"imagefolder:{self.root.name}"
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {self.root} does not exist or is not a folder")
        metas = find_metadata(self.root, split)
        if not metas:
            raise ValueError(
                f"no metadata.jsonl or metadata.csv in {self.root} (nor in a split folder such as "
                f"{self.root / 'train'}). Expected a layout like:\n{IMAGEFOLDER_EXAMPLE}"
            )
        self.metadata_files = metas
        all_meta_dirs = {m.parent for m in find_metadata(self.root, "all")}
        candidates: list[Entry] = []
        seen: set[Path] = set()
        for meta in metas:
            folder = meta.parent
            for row in _read_metadata_rows(meta, self.skipped_report):
                file_name = row.get("file_name")
                if not isinstance(file_name, str) or not file_name.strip():
                    self.skipped_report.add(REASON_BAD_METADATA, row["_where"])
                    continue
                path = folder / file_name.strip()
                key = path.resolve()
                if key in seen:
                    self.skipped_report.add(REASON_DUPLICATE, str(path))
                    continue
                seen.add(key)
                texts = next((_parse_text(row[k]) for k in TEXT_KEYS if k in row), None)
                if texts is None:
                    self.skipped_report.add(REASON_NO_CAPTION, str(path))
                    continue
                caps = clean_captions(texts)
                if not caps:
                    self.skipped_report.add(REASON_EMPTY_CAPTION, str(path))
                    continue
                extra = {k: v for k, v in row.items() if k not in TEXT_KEYS and k not in ("file_name", "_where")}
                candidates.append(Entry(path, caps, extra=extra))
            skip = {d for d in all_meta_dirs if d != folder}
            for p in _unlisted_images(folder, seen, skip):
                self.skipped_report.add(REASON_NO_CAPTION, str(p))
        self._build(candidates, f"({', '.join(str(m) for m in metas)})")


# ---------------------------------------------------------------------------------------
# Images with same-named .txt files
# ---------------------------------------------------------------------------------------


class TxtPairsDataset(FileCaptionDataset):
    """A folder (searched recursively) of images each with a same-named `.txt` caption file
    beside it: one caption per line, blank lines ignored. Two images sharing one stem in one
    folder (`a.jpg`, `a.png`) are ambiguous: the first by name is kept, the rest reported as
    "duplicate file name".
    """

    layout_example = TXT_EXAMPLE

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        preprocess: Preprocess | None = None,
        verify: str = "full",
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        workers: int | None = None,
    ) -> None:
        """root: the folder; split: when `root/<split>/` exists only it is read, otherwise
        the whole folder (such folders rarely have splits); the rest as in `FileCaptionDataset`."""
        super().__init__(root, preprocess, verify, max_pixels, workers)
        self.split = split
        self.name = f"txt:{self.root.name}"
        if not self.root.is_dir():
            raise FileNotFoundError(f"caption folder {self.root} does not exist or is not a folder")
        folder = self.root / split if split != "all" and (self.root / split).is_dir() else self.root
        candidates: list[Entry] = []
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = sorted(n for n in dirnames if not n.startswith("."))
            d = Path(dirpath)
            texts = {Path(n).stem: n for n in filenames if n.lower().endswith(".txt") and not n.startswith(".")}
            taken: set[str] = set()
            for name in sorted(filenames):
                p = d / name
                if name.startswith(".") or not is_image_file(p):
                    continue
                stem = p.stem
                if stem in taken:
                    self.skipped_report.add(REASON_DUPLICATE, str(p))
                    continue
                taken.add(stem)
                if stem not in texts:
                    self.skipped_report.add(REASON_NO_CAPTION, str(p))
                    continue
                caps = read_caption_file(d / texts[stem])
                if not caps:
                    self.skipped_report.add(REASON_EMPTY_CAPTION, str(p))
                    continue
                candidates.append(Entry(p, caps))
        self._build(candidates)


def has_txt_pairs(root: Path, limit: int = 20000) -> bool:
    """True when some image under `root` has a same-named .txt beside it (looks at most
    `limit` files so that detection stays quick on huge trees)."""
    seen = 0
    for _dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [n for n in dirnames if not n.startswith(".")]
        stems = {Path(n).stem for n in filenames if n.lower().endswith(".txt")}
        if stems and any(is_image_file(n) and Path(n).stem in stems for n in filenames):
            return True
        seen += len(filenames)
        if seen > limit:
            return False
    return False


# ---------------------------------------------------------------------------------------
# Shared by the classic layouts (CUB, Oxford-102)
# ---------------------------------------------------------------------------------------


class _NameListUnpickler(pickle.Unpickler):
    """StackGAN's `filenames.pickle` is a plain list of strings; refuse anything that would
    need a class or function to rebuild, so that a tampered file cannot run code."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a file list should hold only strings")


def load_name_list(path: str | Path) -> list[str]:
    """The list of names in a (Python 2 or 3) `filenames.pickle`, loaded without running code.

    Raises ValueError when the file is not a pickled list (or tuple) of strings.
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            # Python 2 `str` pickles carry bytes; latin1 maps them 1:1 onto code points.
            data = _NameListUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise ValueError(f"{path} is not a pickled list of file names: {e}") from e
    if not isinstance(data, (list, tuple)):
        raise ValueError(f"{path} should hold a list of file names, found {type(data).__name__}")
    names = []
    for item in data:
        if isinstance(item, bytes):
            item = item.decode("latin1")
        if not isinstance(item, str):
            raise ValueError(f"{path} should hold only strings, found {type(item).__name__}")
        names.append(item)
    return names


# Fixed seed of the class-disjoint splits we make when a data set ships no split lists: any
# constant would do; it must simply never change, or "test" would leak into "train".
SPLIT_SEED = 2016


def class_split(classes: Iterable[str], train_fraction: float, seed: int = SPLIT_SEED) -> tuple[list[str], list[str]]:
    """Deterministic class-disjoint split: (train classes, test classes), each sorted.

    The sorted class names are permuted with a fixed seed; the first round(n * fraction) are
    train (at least one of each side when there are two or more classes).
    """
    names = sorted(set(classes))
    n = len(names)
    perm = np.random.default_rng(seed).permutation(n)
    n_train = int(round(n * train_fraction))
    if n >= 2:
        n_train = min(max(n_train, 1), n - 1)
    train = sorted(names[i] for i in perm[:n_train])
    test = sorted(names[i] for i in perm[n_train:])
    return train, test


def check_split(split: str) -> str:
    """Validate a split name of the classic layouts."""
    if split not in ("train", "test", "all"):
        raise ValueError(f'split must be "train", "test" or "all", got {split!r}')
    return split
