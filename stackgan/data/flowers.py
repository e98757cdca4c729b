"""Oxford-102 flowers with the captions of Reed et al. (2016).

Layout::

    root/jpg/image_00001.jpg                         8,189 images
    root/text_c10/class_00001/image_06734.txt        10 captions, one per line
    root/train/filenames.pickle                      optional: StackGAN's split
    root/test/filenames.pickle

There are no bounding boxes. Without the split pickles, the 102 classes are split 82 train /
20 test, class-disjoint, by a fixed seeded permutation (`class_split`).
"""

from __future__ import annotations

import logging
import os
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

__all__ = ["FlowersDataset"]

log = logging.getLogger(__name__)

FLOWERS_TRAIN_FRACTION = 82 / 102

FLOWERS_EXAMPLE = """\
  root/jpg/image_00001.jpg
  root/text_c10/class_00001/image_00001.txt   (one caption per line)
  root/train/filenames.pickle  root/test/filenames.pickle   (optional)"""


class FlowersDataset(FileCaptionDataset):
    """Oxford-102 + Reed et al. captions; `split` is "train", "test" or "all"."""

    layout_example = FLOWERS_EXAMPLE

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        preprocess: Preprocess | None = None,
        verify: str = "full",
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        workers: int | None = None,
    ) -> None:
        """root: folder holding jpg/ and text_c10/; split: "train", "test" or "all"; the other
        arguments as in `FileCaptionDataset`."""
        super().__init__(root, preprocess, verify, max_pixels, workers)
        self.split = check_split(split)
        self.name = f"flowers:{split}"
        jpg, text_dir = self.root / "jpg", self.root / "text_c10"
        if not jpg.is_dir() or not text_dir.is_dir():
            raise ValueError(f"{self.root} is not an Oxford-102 folder. Expected a layout like:\n{FLOWERS_EXAMPLE}")

        # image stem -> (class, caption file); the text folders are the only class labels.
        texts: dict[str, tuple[str, Path]] = {}
        for cls in sorted(p for p in text_dir.iterdir() if p.is_dir()):
            for f in sorted(cls.iterdir()):
                if f.suffix == ".txt" and f.stem not in texts:
                    texts[f.stem] = (cls.name, f)
        images = {p.stem: p for p in sorted(jpg.iterdir()) if is_image_file(p) and not p.name.startswith(".")}
        for stem in sorted(set(images) - set(texts)):
            self.skipped_report.add(REASON_NO_CAPTION, str(images[stem]))

        candidates: list[Entry] = []
        for stem in self._split_stems(texts):
            if stem not in texts:  # listed in a pickle but absent from text_c10
                path = images.get(stem, jpg / f"{stem}.jpg")
                self.skipped_report.add(REASON_NO_CAPTION if stem in images else REASON_MISSING, str(path))
                continue
            cls, txt = texts[stem]
            if stem not in images:
                self.skipped_report.add(REASON_MISSING, str(jpg / f"{stem}.jpg"))
                continue
            caps = read_caption_file(txt)
            if not caps:
                self.skipped_report.add(REASON_EMPTY_CAPTION, str(images[stem]))
                continue
            candidates.append(Entry(images[stem], caps, extra={"class": cls}))
        self._build(candidates, f"(split {split!r})")

    def _split_stems(self, texts: dict[str, tuple[str, Path]]) -> list[str]:
        pickles = {s: self.root / s / "filenames.pickle" for s in ("train", "test")}
        # Entries appear as "jpg/image_00001", "class_00001/image_00001" or bare names.
        names = {
            s: [os.path.basename(_no_ext(n)) for n in load_name_list(p)] for s, p in pickles.items() if p.is_file()
        }
        if self.split == "all":
            listed = list(dict.fromkeys(n for s in ("train", "test") for n in names.get(s, [])))
            return listed + sorted(set(texts) - set(listed))
        if self.split in names:
            log.info("%s: split from %s", self.name, pickles[self.split])
            return names[self.split]
        other = "test" if self.split == "train" else "train"
        if other in names:
            exclude = set(names[other])
            return sorted(s for s in texts if s not in exclude)
        train, test = class_split({c for c, _ in texts.values()}, FLOWERS_TRAIN_FRACTION)
        chosen = set(train if self.split == "train" else test)
        log.info("%s: no filenames.pickle; class-disjoint split %d/%d classes", self.name, len(train), len(test))
        return sorted(s for s, (c, _) in texts.items() if c in chosen)


def _no_ext(name: str) -> str:
    name = name.replace("\\", "/")
    return name[: -len(Path(name).suffix)] if is_image_file(name) else name
