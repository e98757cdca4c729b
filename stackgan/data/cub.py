"""CUB-200-2011 birds with the captions of Reed et al. (2016), as StackGAN used them.

Layout (the original archives unpacked side by side)::

    root/CUB_200_2011/images/<class>/<img>.jpg
    root/CUB_200_2011/images.txt            "<id> <class>/<img>.jpg"
    root/CUB_200_2011/bounding_boxes.txt    "<id> <x> <y> <w> <h>"
    root/text/<class>/<img>.txt             10 captions, one per line ("text_c10" in some copies)
    root/train/filenames.pickle             optional: StackGAN's split, "<class>/<img>" names
    root/test/filenames.pickle

Every image is cropped to StackGAN's square around its bounding box (side 1.5 x the box's
longer side, clipped to the image) before resizing. Without the split pickles, the 200 classes
are split 150 train / 50 test, class-disjoint, by a fixed seeded permutation (`class_split`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from stackgan.data.folders import (
    REASON_EMPTY_CAPTION,
    REASON_NO_CAPTION,
    Entry,
    FileCaptionDataset,
    check_split,
    class_split,
    load_name_list,
    read_caption_file,
)
from stackgan.data.images import DEFAULT_MAX_PIXELS, REASON_MISSING, Preprocess, is_image_file

__all__ = ["CUBDataset", "find_cub_dirs"]

log = logging.getLogger(__name__)

CUB_TRAIN_FRACTION = 150 / 200

CUB_EXAMPLE = """\
  root/CUB_200_2011/images/001.Black_footed_Albatross/Black_Footed_Albatross_0001_796111.jpg
  root/CUB_200_2011/images.txt  root/CUB_200_2011/bounding_boxes.txt
  root/text/001.Black_footed_Albatross/Black_Footed_Albatross_0001_796111.txt   (or text_c10/)
  root/train/filenames.pickle  root/test/filenames.pickle   (optional)"""


def find_cub_dirs(root: str | Path) -> tuple[Path, Path | None]:
    """(the CUB_200_2011 folder, the captions folder or None) for a data root.

    `root` may be the folder holding `CUB_200_2011/` or `CUB_200_2011/` itself.
    """
    root = Path(root)
    if (root / "CUB_200_2011").is_dir():
        cub = root / "CUB_200_2011"
    elif (root / "images.txt").is_file() or (root / "images").is_dir():
        cub = root
    else:
        raise ValueError(f"{root} is not a CUB-200-2011 folder. Expected a layout like:\n{CUB_EXAMPLE}")
    for base in (root, cub, cub.parent):
        for name in ("text", "text_c10"):
            if (base / name).is_dir():
                return cub, base / name
    return cub, None


def _read_table(path: Path) -> dict[str, list[str]]:
    """`<id> <fields...>` lines -> {id: fields}."""
    out: dict[str, list[str]] = {}
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2:
                out[parts[0]] = parts[1:]
    return out


def _strip_ext(rel: str) -> str:
    rel = rel.replace("\\", "/")
    return rel[: -len(Path(rel).suffix)] if is_image_file(rel) else rel


class CUBDataset(FileCaptionDataset):
    """CUB-200-2011 + Reed et al. captions; `split` is "train", "test" or "all"."""

    layout_example = CUB_EXAMPLE

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        preprocess: Preprocess | None = None,
        crop_to_box: bool = True,
        verify: str = "full",
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        workers: int | None = None,
    ) -> None:
        """
        root:        folder holding CUB_200_2011/ and text/ (or CUB_200_2011/ itself).
        split:       "train", "test" or "all".
        crop_to_box: crop around the bounding box as StackGAN did (needs bounding_boxes.txt).
        The other arguments as in `FileCaptionDataset`.
        """
        super().__init__(root, preprocess, verify, max_pixels, workers)
        self.split = check_split(split)
        self.name = f"cub:{split}"
        cub, text_dir = find_cub_dirs(self.root)
        if text_dir is None:
            raise ValueError(
                f"no captions folder (text/ or text_c10/) next to {cub}; download Reed et al.'s "
                f"captions. Expected a layout like:\n{CUB_EXAMPLE}"
            )
        images_dir = cub / "images"
        keys = self._image_keys(cub, images_dir)  # "<class>/<img>" -> (id or None, relative path)
        boxes: dict[str, tuple[float, float, float, float]] = {}
        if crop_to_box and (cub / "bounding_boxes.txt").is_file():
            table = _read_table(cub / "bounding_boxes.txt")
            for key, (img_id, _) in keys.items():
                row = table.get(img_id or "")
                if row is not None and len(row) >= 4:
                    x, y, w, h = (float(v) for v in row[:4])
                    boxes[key] = (x, y, w, h)
        elif crop_to_box:
            log.warning("%s has no bounding_boxes.txt: images are used uncropped", cub)

        wanted = self._split_keys(keys, cub)
        candidates: list[Entry] = []
        for key in wanted:
            if key not in keys:
                self.skipped_report.add(REASON_MISSING, str(images_dir / f"{key}.jpg"))
                continue
            path = images_dir / keys[key][1]
            txt = text_dir / f"{key}.txt"
            if not txt.is_file():
                self.skipped_report.add(REASON_NO_CAPTION, str(path))
                continue
            caps = read_caption_file(txt)
            if not caps:
                self.skipped_report.add(REASON_EMPTY_CAPTION, str(path))
                continue
            candidates.append(Entry(path, caps, box=boxes.get(key), extra={"class": key.split("/")[0]}))
        self._build(candidates, f"(split {split!r})")

    @staticmethod
    def _image_keys(cub: Path, images_dir: Path) -> dict[str, tuple[str | None, str]]:
        if (cub / "images.txt").is_file():
            return {_strip_ext(rel[0]): (img_id, rel[0]) for img_id, rel in _read_table(cub / "images.txt").items()}
        if not images_dir.is_dir():
            raise ValueError(f"{cub} has neither images.txt nor images/. Expected a layout like:\n{CUB_EXAMPLE}")
        # No images.txt: the folder itself is the list (and there are no box ids to join on).
        keys = {}
        for cls in sorted(p for p in images_dir.iterdir() if p.is_dir()):
            for f in sorted(cls.iterdir()):
                if is_image_file(f):
                    keys[f"{cls.name}/{f.stem}"] = (None, f"{cls.name}/{f.name}")
        return keys

    def _split_keys(self, keys: dict[str, tuple[str | None, str]], cub: Path) -> list[str]:
        """The "<class>/<img>" names of this split, in a stable order."""
        pickles = {}
        for s in ("train", "test"):
            for base in (self.root, cub.parent):
                if (base / s / "filenames.pickle").is_file():
                    pickles[s] = base / s / "filenames.pickle"
                    break
        names = {s: [_strip_ext(n) for n in load_name_list(p)] for s, p in pickles.items()}
        if self.split == "all":
            if names:
                listed = list(dict.fromkeys(n for s in ("train", "test") for n in names.get(s, [])))
                rest = sorted(set(keys) - set(listed))
                return listed + rest
            return sorted(keys)
        if self.split in names:
            log.info("%s: split from %s", self.name, pickles[self.split])
            return names[self.split]
        other = "test" if self.split == "train" else "train"
        if other in names:
            # Only the other list exists: its complement keeps the two disjoint.
            exclude = set(names[other])
            return sorted(k for k in keys if k not in exclude)
        train, test = class_split({k.split("/")[0] for k in keys}, CUB_TRAIN_FRACTION)
        chosen = set(train if self.split == "train" else test)
        log.info("%s: no filenames.pickle; class-disjoint split %d/%d classes", self.name, len(train), len(test))
        return sorted(k for k in keys if k.split("/")[0] in chosen)
