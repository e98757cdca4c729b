"""MS-COCO captions (2014 or 2017), or any file in the COCO captions JSON format.

Layout::

    root/annotations/captions_train2014.json     {"images": [{"id", "file_name"}, ...],
    root/annotations/captions_val2014.json        "annotations": [{"image_id", "caption"}, ...]}
    root/train2014/COCO_train2014_000000000009.jpg
    root/val2014/...

`path` may be the root, the annotations folder or one captions JSON file. Images are looked
for in a folder named after the JSON (`captions_train2014.json` -> `train2014/`) beside the
annotations folder, or in `image_dir` when given. COCO's test images have no captions, so
split "test" reads the validation captions, as StackGAN did.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from stackgan.data.folders import (
    REASON_BAD_METADATA,
    REASON_DUPLICATE,
    REASON_EMPTY_CAPTION,
    REASON_NO_CAPTION,
    Entry,
    FileCaptionDataset,
    clean_captions,
)
from stackgan.data.images import DEFAULT_MAX_PIXELS, Preprocess

__all__ = ["COCODataset", "find_caption_files"]

log = logging.getLogger(__name__)

COCO_EXAMPLE = """\
  root/annotations/captions_train2014.json   (or captions_train2017.json, captions_val*.json)
  root/train2014/COCO_train2014_000000000009.jpg
  (or a captions JSON file with "images" [{"id", "file_name"}] and "annotations" [{"image_id", "caption"}])"""

_SPLIT_PREFIXES = {"train": ("train",), "test": ("val",), "val": ("val",), "all": ("train", "val")}


def find_caption_files(path: str | Path, split: str = "train") -> list[Path]:
    """The captions JSON files of `split` under a COCO root or annotations folder, or `[path]`
    when `path` is itself a JSON file. The newest year wins when several are present."""
    path = Path(path)
    if path.is_file():
        return [path]
    if split not in _SPLIT_PREFIXES:
        raise ValueError(f'split must be "train", "test", "val" or "all", got {split!r}')
    ann = path / "annotations" if (path / "annotations").is_dir() else path
    found = []
    for prefix in _SPLIT_PREFIXES[split]:
        files = sorted(ann.glob(f"captions_{prefix}*.json"), reverse=True)
        if files:
            found.append(files[0])
    return found


def _image_dir_for(ann_file: Path, image_dir: Path | None) -> Path:
    if image_dir is not None:
        return image_dir
    stem = ann_file.stem.removeprefix("captions_")  # captions_train2014 -> train2014
    bases = [ann_file.parent.parent, ann_file.parent]
    tried = [b / sub / stem for b in bases for sub in ("", "images")]
    for d in tried:
        if d.is_dir():
            return d
    if (ann_file.parent / "images").is_dir():
        return ann_file.parent / "images"
    raise ValueError(
        f"no image folder for {ann_file}: looked for {', '.join(str(t) for t in tried)}; "
        f"pass image_dir=... . Expected a layout like:\n{COCO_EXAMPLE}"
    )


class COCODataset(FileCaptionDataset):
    """COCO captions (5 per image); `split` is "train", "test" (= COCO val), "val" or "all"."""

    layout_example = COCO_EXAMPLE

    def __init__(
        self,
        path: str | Path,
        split: str = "train",
        preprocess: Preprocess | None = None,
        image_dir: str | Path | None = None,
        verify: str = "full",
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        workers: int | None = None,
    ) -> None:
        """
        path:      COCO root, its annotations folder, or one captions JSON file.
        split:     which captions files to read when `path` is a folder.
        image_dir: the image folder, when it is not beside the annotations as in COCO.
        The other arguments as in `FileCaptionDataset` ("header" verification is much faster
        on the 83k-image training set).
        """
        super().__init__(path, preprocess, verify, max_pixels, workers)
        self.split = split
        self.name = f"coco:{split}"
        if not self.root.exists():
            raise FileNotFoundError(f"COCO path {self.root} does not exist")
        files = find_caption_files(self.root, split)
        if not files:
            raise ValueError(
                f"no captions_*.json for split {split!r} in {self.root}. Expected a layout like:\n{COCO_EXAMPLE}"
            )
        self.caption_files = files
        candidates: list[Entry] = []
        for ann_file in files:
            candidates.extend(self._parse(ann_file, _image_dir_for(ann_file, Path(image_dir) if image_dir else None)))
        self._build(candidates, f"({', '.join(str(f) for f in files)})")

    def _parse(self, ann_file: Path, image_dir: Path) -> list[Entry]:
        try:
            with ann_file.open(encoding="utf-8") as f:
                data = json.load(f)
            images, annotations = data["images"], data["annotations"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(
                f"{ann_file} is not a COCO captions file ({type(e).__name__}: {e}). "
                f"Expected a layout like:\n{COCO_EXAMPLE}"
            ) from e
        captions: dict[object, list[str]] = {}
        for a in annotations:
            if not isinstance(a, dict) or not isinstance(a.get("image_id"), (int, str)):
                self.skipped_report.add(REASON_BAD_METADATA, f"{ann_file}: {str(a)[:60]}")
                continue
            captions.setdefault(a["image_id"], []).append(a.get("caption"))
        entries, seen_ids, seen_files = [], set(), set()
        for im in sorted(images, key=lambda im: str(im.get("file_name", "")) if isinstance(im, dict) else ""):
            if (
                not isinstance(im, dict)
                or not isinstance(im.get("id"), (int, str))
                or not isinstance(im.get("file_name"), str)
            ):
                self.skipped_report.add(REASON_BAD_METADATA, f"{ann_file}: {str(im)[:60]}")
                continue
            path = image_dir / im["file_name"]
            if im["id"] in seen_ids or im["file_name"] in seen_files:
                self.skipped_report.add(REASON_DUPLICATE, str(path))
                continue
            seen_ids.add(im["id"])
            seen_files.add(im["file_name"])
            if im["id"] not in captions:
                self.skipped_report.add(REASON_NO_CAPTION, str(path))
                continue
            caps = clean_captions(captions[im["id"]])
            if not caps:
                self.skipped_report.add(REASON_EMPTY_CAPTION, str(path))
                continue
            entries.append(Entry(path, caps, extra={"coco_id": im["id"]}))
        orphans = set(captions) - seen_ids
        if orphans:
            log.warning("%s: %d caption(s) refer to image ids not in its image list", ann_file, len(orphans))
        return entries
