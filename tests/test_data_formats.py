"""Loaders for users' folders and the classic layouts: every layout, built tiny in tmp_path,
with the bad inputs real folders contain."""

from __future__ import annotations

import io
import json
import pickle
import random
import struct
import tempfile
import zlib
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from stackgan.data.base import CaptionedImages
from stackgan.data.coco import COCODataset
from stackgan.data.cub import CUBDataset
from stackgan.data.flowers import FlowersDataset
from stackgan.data.folders import ImageFolderDataset, TxtPairsDataset, class_split, crop_box, load_name_list
from stackgan.data.formats import detect_format, open_dataset
from stackgan.data.images import ImageLoadError, Preprocess, load_rgb, open_header, preprocess, to_rgb
from stackgan.data.inspect import format_report, inspect_dataset
from stackgan.data.synthetic_folder import make_glyph_folder

RED, BLUE = (255, 0, 0), (0, 0, 255)


# --------------------------------------------------------------------------- helpers
def rgb(path: Path, size=(32, 32), color=RED, fmt=None, **save) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, fmt, **save)
    return path


def noisy(path: Path, size=(64, 64), seed=0, **save) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, **save)
    return path


def truncate(path: Path, frac: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * frac)])
    return path


def fake_png_header(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height (no pixel data): a decompression bomb in 60 bytes."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


def py2_pickle(names: list[str]) -> bytes:
    """The bytes Python 2's cPickle (protocol 2) writes for a list of `str`: SHORT_BINSTRINGs."""
    out = b"\x80\x02](" + b"".join(b"U" + bytes([len(n)]) + n.encode("latin1") for n in names) + b"e."
    return out


def check_image(ds: CaptionedImages, i: int, r: int) -> torch.Tensor:
    t = ds.image(i, r)
    assert t.dtype == torch.uint8 and tuple(t.shape) == (3, r, r)
    return t


def counts(ds) -> dict[str, int]:
    return {k: len(v) for k, v in ds.skipped_report.skipped.items()}


# --------------------------------------------------------------------------- load_rgb
def test_load_rgb_converts_every_mode(tmp_path):
    cases = {}
    a = Image.new("RGBA", (8, 8), (255, 0, 0, 0))  # fully transparent red -> white
    a.save(tmp_path / "rgba.png")
    cases["rgba.png"] = (255, 255, 255)
    Image.new("LA", (8, 8), (0, 0)).save(tmp_path / "la.png")
    cases["la.png"] = (255, 255, 255)
    p = Image.new("P", (8, 8), 1)
    p.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    p.save(tmp_path / "pal.png")
    cases["pal.png"] = (0, 255, 0)
    p.save(tmp_path / "pal_t.png", transparency=1)  # palette entry 1 transparent -> white
    cases["pal_t.png"] = (255, 255, 255)
    p.save(tmp_path / "pal.gif")
    cases["pal.gif"] = (0, 255, 0)
    Image.new("L", (8, 8), 100).save(tmp_path / "gray.png")
    cases["gray.png"] = (100, 100, 100)
    Image.new("1", (8, 8), 1).save(tmp_path / "bw.png")
    cases["bw.png"] = (255, 255, 255)
    Image.new("CMYK", (8, 8), (0, 0, 0, 0)).save(tmp_path / "cmyk.jpg")
    cases["cmyk.jpg"] = (255, 255, 255)
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "cmyk.tif")
    cases["cmyk.tif"] = (255, 0, 0)
    Image.fromarray(np.full((8, 8), 65535, np.uint16)).save(tmp_path / "g16.png")
    cases["g16.png"] = (255, 255, 255)
    Image.fromarray(np.full((8, 8), 32896, np.uint16)).save(tmp_path / "g16mid.png")
    cases["g16mid.png"] = (128, 128, 128)
    for name, want in cases.items():
        img = load_rgb(tmp_path / name)
        assert img.mode == "RGB", name
        got = img.getpixel((4, 4))
        assert max(abs(g - w) for g, w in zip(got, want, strict=True)) <= 3, (name, got, want)


def test_to_rgb_32bit_and_float():
    i32 = Image.fromarray(np.full((4, 4), 65535, np.int32), mode="I")
    assert to_rgb(i32).getpixel((0, 0)) == (255, 255, 255)
    f = Image.fromarray(np.full((4, 4), 0.5, np.float32), mode="F")
    assert to_rgb(f).getpixel((0, 0)) == (128, 128, 128)


def test_exif_rotation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), BLUE)
    img.paste(Image.new("RGB", (20, 20), RED), (0, 0))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise: the left edge becomes the top
    img.save(tmp_path / "rot.jpg", exif=exif, quality=95)
    assert open_header(tmp_path / "rot.jpg") == (20, 40)
    out = load_rgb(tmp_path / "rot.jpg")
    assert out.size == (20, 40)
    top, bottom = out.getpixel((10, 5)), out.getpixel((10, 35))
    assert top[0] > 200 and top[2] < 60 and bottom[2] > 200 and bottom[0] < 60


def test_broken_files_raise_image_load_error(tmp_path):
    (tmp_path / "junk.png").write_bytes(b"not an image at all" * 10)
    noisy(tmp_path / "t.png")
    truncate(tmp_path / "t.png")
    noisy(tmp_path / "t.jpg", quality=90)
    truncate(tmp_path / "t.jpg", 0.6)
    (tmp_path / "empty.jpg").write_bytes(b"")
    # Found by the fuzz test: a PNG cut inside its first chunk after IHDR, where an EXIF
    # lookup before load() used to swallow the error and leave a half-loaded image.
    (tmp_path / "cut.png").write_bytes(_real_bytes()[0][:41] + b"\0\0")
    want = {
        "cut.png": "corrupt or truncated",
        "junk.png": "unreadable",
        "t.png": "corrupt or truncated",
        "t.jpg": "corrupt or truncated",
        "empty.jpg": "unreadable",
        "absent.png": "missing file",
    }
    for name, reason in want.items():
        with pytest.raises(ImageLoadError) as e:
            load_rgb(tmp_path / name)
        assert e.value.reason == reason, name
        assert name in str(e.value)


def test_scan_catches_cut_png(tmp_path):
    rgb(tmp_path / "ok.png")
    (tmp_path / "cut.png").write_bytes(_real_bytes()[0][:41] + b"\0\0")
    for stem in ("ok", "cut"):
        (tmp_path / f"{stem}.txt").write_text("caption\n")
    ds = TxtPairsDataset(tmp_path)
    assert len(ds) == 1 and counts(ds) == {"corrupt or truncated": 1}


def test_decompression_bomb(tmp_path):
    rgb(tmp_path / "a.png", (50, 50))
    assert load_rgb(tmp_path / "a.png", max_pixels=2500).size == (50, 50)
    with pytest.raises(ImageLoadError, match="decompression bomb"):
        load_rgb(tmp_path / "a.png", max_pixels=2499)
    # A header claiming 10^10 pixels trips PIL's own guard even with our limit off.
    fake_png_header(tmp_path / "bomb.png", 100_000, 100_000)
    for limit in (None, 10**6):
        with pytest.raises(ImageLoadError) as e:
            load_rgb(tmp_path / "bomb.png", max_pixels=limit)
        assert e.value.reason == "decompression bomb"


# --------------------------------------------------------------------------- preprocess
def test_preprocess_policies():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 90, 3), dtype=np.uint8))
    t = preprocess(img, 32)
    assert t.dtype == torch.uint8 and t.shape == (3, 32, 32)
    pol = Preprocess(resize="random", flip=True)
    a = [preprocess(img, 32, pol, np.random.default_rng(5)) for _ in range(2)]
    assert torch.equal(a[0], a[1])
    b = [preprocess(img, 32, pol, random.Random(5)) for _ in range(2)]
    assert torch.equal(b[0], b[1])
    outs = {preprocess(img, 32, pol, np.random.default_rng(s)).sum().item() for s in range(8)}
    assert len(outs) > 1  # crops and flips do vary
    # Centre crop of a flipped image is the flip of the centre crop.
    square = img.crop((0, 0, 60, 60))
    flip_always = preprocess(square, 60, Preprocess(flip=True), _AlwaysHeads())
    assert torch.equal(flip_always, preprocess(square, 60).flip(-1))
    with pytest.raises(ImageLoadError, match="too small"):
        preprocess(img, 32, Preprocess(min_size=61))
    with pytest.raises(ValueError):
        Preprocess(resize="stretch")


class _AlwaysHeads(random.Random):
    def random(self) -> float:
        return 0.0


# --------------------------------------------------------------------------- image folder
def build_messy_imagefolder(root: Path) -> Path:
    """Every kind of trouble, next to images that must survive it."""
    good = ["ok.png", "ok2.jpg", "rgba.png", "pal.png", "gray.png", "cmyk.jpg", "g16.png", "exif.jpg"]
    rgb(root / "ok.png")
    rgb(root / "ok2.jpg", color=BLUE)
    Image.new("RGBA", (32, 32), (0, 255, 0, 128)).save(root / "rgba.png")
    p = Image.new("P", (32, 32), 0)
    p.putpalette([10, 20, 30] * 256)
    p.save(root / "pal.png", transparency=0)
    Image.new("L", (32, 32), 30).save(root / "gray.png")
    Image.new("CMYK", (32, 32), (200, 0, 0, 0)).save(root / "cmyk.jpg")
    Image.fromarray(np.full((32, 32), 4000, np.uint16)).save(root / "g16.png")
    exif = Image.Exif()
    exif[0x0112] = 8
    rgb(root / "exif.jpg", (32, 20), exif=exif)
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    truncate(noisy(root / "trunc.png", (32, 32)))
    truncate(noisy(root / "trunc.jpg", (32, 32), quality=95), 0.6)
    rgb(root / "nocap.png")
    rgb(root / "empty.png")
    rgb(root / "blank.png")
    rgb(root / "small.png", (8, 8))
    rgb(root / "bomb.png", (80, 80))
    rows = [{"file_name": n, "text": f"caption of {n}"} for n in good]
    rows[1]["text"] = ["first caption", "  ", "second caption"]
    rows += [
        {"file_name": "corrupt.png", "text": "x"},
        {"file_name": "trunc.png", "text": "x"},
        {"file_name": "trunc.jpg", "text": "x"},
        {"file_name": "missing.png", "text": "x"},
        {"file_name": "empty.png", "text": ""},
        {"file_name": "blank.png", "text": ["", "   "]},
        {"file_name": "small.png", "text": "x"},
        {"file_name": "bomb.png", "text": "x"},
        {"file_name": "ok.png", "text": "listed twice"},
    ]
    lines = [json.dumps(r) for r in rows] + ["{not json"]
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return root


def test_imagefolder_jsonl_skips_and_reports(tmp_path, caplog):
    root = build_messy_imagefolder(tmp_path / "data")
    with caplog.at_level("WARNING"):
        ds = ImageFolderDataset(root, preprocess=Preprocess(min_size=16), max_pixels=4000)
    assert isinstance(ds, CaptionedImages)
    assert len(ds) == 8
    assert counts(ds) == {
        "unreadable": 1,
        "corrupt or truncated": 2,
        "missing file": 1,
        "empty caption": 2,
        "too small": 1,
        "decompression bomb": 1,
        "duplicate file name": 1,
        "bad metadata row": 1,
        "no caption": 1,
    }
    assert ds.skipped_report.summary() in caplog.text  # warned once, with the summary
    assert sum(r.message.count("skipped") for r in caplog.records) == 1
    names = [ds.path(i).name for i in range(len(ds))]
    assert ds.captions(names.index("ok2.jpg")) == ["first caption", "second caption"]
    assert ds.image_size(names.index("exif.jpg")) == (20, 32)
    for i in range(len(ds)):
        check_image(ds, i, 16)
    white_ish = check_image(ds, names.index("pal.png"), 16)
    assert white_ish.min() >= 250  # transparent palette image composited on white
    assert detect_format(root) == "imagefolder"


def test_imagefolder_csv_in_train_folder(tmp_path):
    root = tmp_path / "csvdata"
    for i in range(3):
        rgb(root / "train" / "img" / f"{i}.png", color=(i * 80, 0, 0))
    rgb(root / "test" / "x.png")
    (root / "train" / "metadata.csv").write_text(
        "file_name,text\n"
        'img/0.png,"a plain caption, with a comma"\n'
        'img/1.png,"[""one"", ""two""]"\n'
        "img/2.png,[not json]\n"
    )
    (root / "test" / "metadata.csv").write_text("file_name,text\nx.png,test caption\n")
    ds = open_dataset(root)
    assert detect_format(root) == "imagefolder"
    assert [ds.captions(i) for i in range(3)] == [["a plain caption, with a comma"], ["one", "two"], ["[not json]"]]
    assert open_dataset(root, split="test").captions(0) == ["test caption"]
    assert len(open_dataset(root, split="all")) == 4
    check_image(ds, 2, 8)


def test_nothing_usable_is_a_clear_error(tmp_path):
    root = tmp_path / "empty_meta"
    root.mkdir()
    (root / "metadata.jsonl").write_text(json.dumps({"file_name": "gone.png", "text": "x"}) + "\n")
    with pytest.raises(ValueError) as e:
        ImageFolderDataset(root)
    msg = str(e.value)
    assert str(root) in msg and "1 missing file" in msg and "metadata.jsonl" in msg and "file_name" in msg

    bare = tmp_path / "bare"
    rgb(bare / "a.png")
    with pytest.raises(ValueError, match="Recognised layouts") as e:
        detect_format(bare)
    assert "imagefolder" in str(e.value) and "cub" in str(e.value)
    with pytest.raises(ValueError, match="0001.txt"):
        open_dataset(bare, format="txt")
    with pytest.raises(ValueError, match="metadata.jsonl"):
        open_dataset(bare, format="imagefolder")
    with pytest.raises(FileNotFoundError):
        detect_format(tmp_path / "nope")
    with pytest.raises(FileNotFoundError):
        open_dataset(tmp_path / "nope", format="txt")
    with pytest.raises(ValueError, match="unknown data format"):
        open_dataset(bare, format="parquet")


# --------------------------------------------------------------------------- txt pairs
def test_txt_pairs_recursive(tmp_path):
    root = tmp_path / "pairs"
    rgb(root / "a.jpg")
    (root / "a.txt").write_text("first\n\n   \nsecond\r\n")
    rgb(root / "sub" / "deeper" / "b.png", color=BLUE)
    (root / "sub" / "deeper" / "b.txt").write_text("\ufeffa blue square\n")
    rgb(root / "sub" / "b.jpg")  # same stem, other folder: a different image
    (root / "sub" / "b.txt").write_text("red in sub\n")
    rgb(root / "dup.jpg")
    rgb(root / "dup.png")  # same stem, same folder: ambiguous
    (root / "dup.txt").write_text("which one?\n")
    rgb(root / "lonely.png")
    rgb(root / "hollow.png")
    (root / "hollow.txt").write_text("\n  \n")
    (root / "notes.txt").write_text("a text file without an image is fine\n")
    rgb(root / ".hidden" / "h.png")
    (root / ".hidden" / "h.txt").write_text("hidden\n")
    truncate(noisy(root / "trunc.jpg", quality=90), 0.6)
    (root / "trunc.txt").write_text("x\n")

    assert detect_format(root) == "txt"
    ds = open_dataset(root)
    caps = {ds.path(i).relative_to(root).as_posix(): ds.captions(i) for i in range(len(ds))}
    assert caps == {
        "a.jpg": ["first", "second"],
        "dup.jpg": ["which one?"],
        "sub/b.jpg": ["red in sub"],
        "sub/deeper/b.png": ["a blue square"],
    }
    assert counts(ds) == {"duplicate file name": 1, "no caption": 1, "empty caption": 1, "corrupt or truncated": 1}
    t = check_image(ds, list(caps).index("sub/deeper/b.png"), 8)
    assert t[2].min() == 255 and t[0].max() == 0


def test_file_broken_after_scan_does_not_crash(tmp_path, caplog):
    root = tmp_path / "pairs"
    for i, c in enumerate([RED, BLUE, (0, 255, 0)]):
        rgb(root / f"{i}.png", color=c)
        (root / f"{i}.txt").write_text(f"caption {i}\n")
    ds = TxtPairsDataset(root)
    (root / "0.png").unlink()
    truncate(noisy(root / "1.png", (32, 32)))
    with caplog.at_level("WARNING"):
        t = check_image(ds, 0, 8)
    assert torch.equal(t, torch.tensor([0, 255, 0], dtype=torch.uint8).view(3, 1, 1).expand(3, 8, 8))
    assert ds.captions(0) == ["caption 2"]  # captions follow the image actually served
    assert counts(ds) == {"missing file after scan": 1, "corrupt or truncated after scan": 1}
    assert torch.equal(check_image(ds, 0, 8), t)  # deterministic, no new reports
    assert ds.skipped_report.count == 2


def test_random_preprocess_is_reproducible(tmp_path):
    root = make_glyph_folder(tmp_path / "g", n=6, resolution=48, seed=1, layout="txt")
    pol = Preprocess(resize="random", flip=True, seed=3)
    a, b = TxtPairsDataset(root, preprocess=pol), TxtPairsDataset(root, preprocess=pol)
    seq_a = [a.image(i % 6, 32) for i in range(12)]
    seq_b = [b.image(i % 6, 32) for i in range(12)]
    assert all(torch.equal(x, y) for x, y in zip(seq_a, seq_b, strict=True))
    assert not all(torch.equal(seq_a[i], seq_a[i + 6]) for i in range(6))  # epochs differ


# --------------------------------------------------------------------------- CUB
def build_cub(
    root: Path, classes=("001.Albatross", "002.Auklet", "003.Cardinal", "004.Dove"), per_class=2
) -> list[str]:
    cub = root / "CUB_200_2011"
    keys, lines, boxes = [], [], []
    img_id = 0
    for cls in classes:
        for k in range(per_class):
            img_id += 1
            name = f"{cls.split('.')[1]}_{k:04d}"
            key = f"{cls}/{name}"
            img = Image.new("RGB", (100, 80), BLUE)
            img.paste(Image.new("RGB", (20, 20), RED), (60, 40))
            img.save(_mk(cub / "images" / cls / f"{name}.jpg"), quality=95)
            lines.append(f"{img_id} {key}.jpg")
            boxes.append(f"{img_id} 60.0 40.0 20.0 20.0")
            txt = root / "text" / cls / f"{name}.txt"
            txt.parent.mkdir(parents=True, exist_ok=True)
            txt.write_text(f"a bird of class {cls}\nit is small\n")
            keys.append(key)
    (cub / "images.txt").write_text("\n".join(lines) + "\n")
    (cub / "bounding_boxes.txt").write_text("\n".join(boxes) + "\n")
    return keys


def _mk(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def test_cub_own_split_and_box_crop(tmp_path):
    keys = build_cub(tmp_path)
    assert detect_format(tmp_path) == "cub"
    train, test = CUBDataset(tmp_path, "train"), CUBDataset(tmp_path, "test")
    assert len(train) == 6 and len(test) == 2  # 4 classes -> 3 / 1, class-disjoint
    classes = lambda ds: {ds.entries[i].extra["class"] for i in range(len(ds))}  # noqa: E731
    assert not classes(train) & classes(test)
    assert len(CUBDataset(tmp_path, "all")) == len(keys)
    assert CUBDataset(tmp_path, "train").entries[0].path == train.entries[0].path  # deterministic
    t = check_image(train, 0, 30)
    # Box (60, 40, 20, 20): crop 30x30 around (70, 50) -> red in the middle, blue at the corners.
    assert tuple(t[:, 15, 15].tolist())[0] > 200 and t[2, 0, 0] > 200
    flat = CUBDataset(tmp_path, "train", crop_to_box=False)
    assert check_image(flat, 0, 30)[2, 15, 15] > 200  # uncropped: the centre is blue
    assert train.captions(0) == [f"a bird of class {train.entries[0].extra['class']}", "it is small"]
    assert crop_box((100, 80), (60, 40, 20, 20)) == (55, 35, 85, 65)
    assert crop_box((100, 80), (90, 70, 20, 20)) == (85, 65, 100, 80)  # clipped at the border


def test_cub_with_py2_pickles_and_text_c10(tmp_path):
    keys = build_cub(tmp_path)
    (tmp_path / "text").rename(tmp_path / "text_c10")
    (tmp_path / "train").mkdir()
    (tmp_path / "test").mkdir()
    (tmp_path / "train" / "filenames.pickle").write_bytes(py2_pickle(keys[:5] + ["009.Nope/Nope_0001"]))
    (tmp_path / "test" / "filenames.pickle").write_bytes(pickle.dumps(keys[5:], protocol=2))
    assert load_name_list(tmp_path / "train" / "filenames.pickle")[:5] == keys[:5]
    train = CUBDataset(tmp_path, "train")
    assert [
        str(train.path(i).relative_to(tmp_path / "CUB_200_2011" / "images"))[:-4] for i in range(len(train))
    ] == keys[:5]
    assert counts(train) == {"missing file": 1}
    assert len(CUBDataset(tmp_path, "test")) == 3
    # Anything but a list of strings is refused without being run.
    (tmp_path / "test" / "filenames.pickle").write_bytes(pickle.dumps(OrderedDict(a=1)))
    with pytest.raises(ValueError, match="refusing"):
        CUBDataset(tmp_path, "test")


# --------------------------------------------------------------------------- Oxford-102
def build_flowers(root: Path, n_classes=3, per_class=2) -> list[str]:
    stems = []
    k = 0
    for c in range(1, n_classes + 1):
        for _ in range(per_class):
            k += 1
            stem = f"image_{k:05d}"
            rgb(root / "jpg" / f"{stem}.jpg", (40, 30), color=(c * 60, 100, 0))
            t = root / "text_c10" / f"class_{c:05d}" / f"{stem}.txt"
            t.parent.mkdir(parents=True, exist_ok=True)
            t.write_text(f"flower of class {c}\nwith petals\n")
            (t.parent / f"{stem}.h5").write_bytes(b"\0")  # Reed's embeddings sit beside; ignored
            stems.append(stem)
    return stems


def test_flowers(tmp_path):
    stems = build_flowers(tmp_path)
    rgb(tmp_path / "jpg" / "image_09999.jpg")  # no captions anywhere
    assert detect_format(tmp_path) == "flowers"
    train, test = FlowersDataset(tmp_path, "train"), FlowersDataset(tmp_path, "test")
    assert len(train) == 4 and len(test) == 2
    assert counts(train) == {"no caption": 1}
    check_image(test, 1, 16)
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "filenames.pickle").write_bytes(py2_pickle([f"jpg/{s}" for s in stems[:3]]))
    train = FlowersDataset(tmp_path, "train")
    assert [train.path(i).stem for i in range(len(train))] == stems[:3]
    assert [FlowersDataset(tmp_path, "test").path(i).stem for i in range(3)] == stems[3:]  # the complement


def test_class_split_is_fixed():
    classes = [f"{i:03d}.c" for i in range(200)]
    tr, te = class_split(reversed(classes), 0.75)
    assert len(tr) == 150 and len(te) == 50 and not set(tr) & set(te)
    assert (tr, te) == class_split(classes, 0.75)
    tr, te = class_split([f"class_{i:05d}" for i in range(102)], 82 / 102)
    assert len(tr) == 82 and len(te) == 20


# --------------------------------------------------------------------------- COCO
def build_coco(root: Path, split="train2014") -> Path:
    images = [{"id": i, "file_name": f"COCO_{i:012d}.jpg"} for i in range(1, 6)]
    for im in images[:4]:
        rgb(root / split / im["file_name"], (64, 48))
    annotations = [
        {"image_id": 1, "caption": "a man riding a wave"},
        {"image_id": 1, "caption": " on a surfboard "},
        {"image_id": 2, "caption": "a cat on a sofa"},
        {"image_id": 3, "caption": "   "},
        {"image_id": 5, "caption": "this image file is missing"},
        {"image_id": 77, "caption": "orphan"},
    ]
    ann = root / "annotations" / f"captions_{split}.json"
    ann.parent.mkdir(parents=True, exist_ok=True)
    ann.write_text(json.dumps({"images": images, "annotations": annotations}))
    return ann


def test_coco(tmp_path):
    ann = build_coco(tmp_path)
    build_coco(tmp_path, "val2014")
    assert detect_format(tmp_path) == "coco" and detect_format(ann) == "coco"
    ds = open_dataset(tmp_path)
    assert len(ds) == 2 and ds.captions(0) == ["a man riding a wave", "on a surfboard"]
    assert counts(ds) == {"empty caption": 1, "no caption": 1, "missing file": 1}
    check_image(ds, 1, 32)
    assert len(open_dataset(tmp_path, split="test")) == 2
    assert len(open_dataset(tmp_path, split="all")) == 4
    assert len(open_dataset(ann)) == 2
    moved = tmp_path / "elsewhere"
    (tmp_path / "train2014").rename(moved)
    with pytest.raises(ValueError, match="image_dir"):
        COCODataset(ann)
    assert len(COCODataset(ann, image_dir=moved)) == 2


# --------------------------------------------------------------------------- fuzzing
_PNG, _JPG = None, None


def _real_bytes() -> tuple[bytes, bytes]:
    global _PNG, _JPG
    if _PNG is None:
        arr = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
        b1, b2 = io.BytesIO(), io.BytesIO()
        Image.fromarray(arr).save(b1, "PNG")
        Image.fromarray(arr).save(b2, "JPEG")
        _PNG, _JPG = b1.getvalue(), b2.getvalue()
    return _PNG, _JPG


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    blobs=st.lists(
        st.tuples(st.binary(max_size=400), st.integers(0, 400), st.sampled_from(["png", "jpg"])), min_size=1, max_size=4
    )
)
def test_random_bytes_never_crash_the_scan(blobs):
    png, jpg = _real_bytes()
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        for k, (noise, keep, ext) in enumerate(blobs):
            # Half the time a real file's first bytes: the decoders get past the signature.
            real = png if ext == "png" else jpg
            data = real[: min(keep, len(real))] + noise if k % 2 else noise
            (root / f"{k}.{ext}").write_bytes(data)
            (root / f"{k}.txt").write_text("a caption\n")
        try:
            ds = TxtPairsDataset(root, workers=1)
        except ValueError as e:
            assert "no usable captioned images" in str(e)
        else:
            assert ds.skipped_report.count + len(ds) == len(blobs)
            for i in range(len(ds)):
                check_image(ds, i, 8)


# --------------------------------------------------------------------------- inspect, glyphs
def test_inspect_dataset(tmp_path):
    root = build_messy_imagefolder(tmp_path / "data")
    with (root / "metadata.jsonl").open("a") as f:
        f.write(json.dumps({"file_name": "long.png", "text": "word " * 70}) + "\n")
    rgb(root / "long.png", (48, 32))
    d = inspect_dataset(root, out_dir=tmp_path / "out", resolution=32, max_pixels=4000)
    assert d["format"] == "imagefolder" and d["num_images"] == 10 and d["num_captions"] == 11
    assert d["captions_per_image"]["max"] == 2 and d["caption_words"]["max"] == 70
    assert d["captions_over_77_tokens_estimate"] == 1
    assert d["skipped"]["by_reason"]["decompression bomb"] == 1
    assert ["32x32", 7] in d["resolutions"]["most_common"]
    assert d["resolutions"]["width"]["max"] == 48
    assert json.loads((tmp_path / "out" / "inspect.json").read_text())["num_images"] == 10
    assert Image.open(tmp_path / "out" / "samples.png").size[0] > 32 * 4
    text = format_report(d)
    assert "images:     10" in text and "decompression bomb" in text and "77 tokens" in text


def test_glyph_folder(tmp_path):
    a = make_glyph_folder(tmp_path / "a", n=24, resolution=32, seed=7)
    b = make_glyph_folder(tmp_path / "b", n=24, resolution=32, seed=7)
    assert (a / "metadata.jsonl").read_text() == (b / "metadata.jsonl").read_text()
    assert (a / "images" / "00005.png").read_bytes() == (b / "images" / "00005.png").read_bytes()
    ds = open_dataset(a)
    assert len(ds) == 24 and ds.skipped_report.count == 0
    caps = [c for i in range(len(ds)) for c in ds.captions(i)]
    assert all(2 <= len(ds.captions(i)) <= 3 for i in range(len(ds)))
    rows = [json.loads(line) for line in (a / "metadata.jsonl").read_text().splitlines()]
    assert all(r["glyph"] in r["text"][0] and r["color"] != r["background"] for r in rows)
    assert len(set(caps)) > 40 and not any(" a o" in c or " a a" in c for c in caps)
    check_image(ds, 0, 32)
    assert ds.attributes(3) == {k: rows[3][k] for k in ("glyph", "color", "size", "background", "pattern")}
    t = make_glyph_folder(tmp_path / "t", n=5, resolution=32, seed=7, layout="txt")
    assert detect_format(t) == "txt" and len(open_dataset(t)) == 5
    assert open_dataset(t).captions(2) == rows[2]["text"]
