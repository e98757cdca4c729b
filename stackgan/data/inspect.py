"""`stackgan data inspect`: what a data folder holds before any training starts.

Counts, captions per image, image sizes, caption lengths (with an estimate of how many
captions exceed CLIP's 77-token context), the skip report, and optionally `inspect.json` and
a `samples.png` grid of images with their captions.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stackgan.data.base import CaptionedImages, caption_grid
from stackgan.data.formats import detect_format, open_dataset
from stackgan.data.images import Preprocess

__all__ = ["TOKENS_PER_WORD", "format_report", "inspect_dataset", "summarize"]

log = logging.getLogger(__name__)

# A rough BPE rate for English captions; good enough to warn, not to truncate by.
TOKENS_PER_WORD = 1.3
CLIP_CONTEXT = 77


def _stats(values: list[float] | np.ndarray) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return {"min": 0, "mean": 0.0, "median": 0.0, "max": 0}
    return {
        "min": float(a.min()),
        "mean": round(float(a.mean()), 3),
        "median": float(np.median(a)),
        "max": float(a.max()),
    }


def _sample_indices(n: int, k: int) -> list[int]:
    """k indices spread evenly over the data set (deterministic, covers classes in order)."""
    if n <= k:
        return list(range(n))
    return [int(i) for i in np.linspace(0, n - 1, k).round()]


def summarize(
    ds: CaptionedImages,
    out_dir: str | Path | None = None,
    resolution: int = 64,
    samples: int = 16,
    header: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The statistics of `inspect_dataset` for an already opened data set (`header`'s keys
    come first in the result)."""
    n = len(ds)
    caps = [ds.captions(i) for i in range(n)]
    per_image = [len(c) for c in caps]
    words = [len(c.split()) for cs in caps for c in cs]
    too_long = sum(1 for w in words if w * TOKENS_PER_WORD > CLIP_CONTEXT)

    sizes = []
    if hasattr(ds, "image_size"):
        sizes = [s for s in (ds.image_size(i) for i in range(n)) if s is not None]
    resolutions: dict[str, Any] = {}
    if sizes:
        w = [s[0] for s in sizes]
        h = [s[1] for s in sizes]
        resolutions = {
            "width": {k: v for k, v in _stats(w).items() if k != "mean"},
            "height": {k: v for k, v in _stats(h).items() if k != "mean"},
            "most_common": [[f"{a}x{b}", c] for (a, b), c in Counter(sizes).most_common(5)],
            "smaller_than_resolution": sum(1 for s in sizes if min(s) < resolution),
        }

    report = getattr(ds, "skipped_report", None)
    skipped = {
        "total": report.count if report else 0,
        "by_reason": {r: len(p) for r, p in sorted(report.skipped.items())} if report else {},
        "first_paths": {r: p[:5] for r, p in sorted(report.skipped.items())} if report else {},
        "summary": report.summary() if report else "no skip report",
    }
    result: dict[str, Any] = dict(header or {})
    result.update(
        {
            "name": getattr(ds, "name", type(ds).__name__),
            "num_images": n,
            "num_captions": int(sum(per_image)),
            "captions_per_image": _stats(per_image),
            "resolutions": resolutions,
            "caption_words": _stats(words),
            "captions_over_77_tokens_estimate": too_long,
            "tokens_estimate_note": f"tokens ~= words x {TOKENS_PER_WORD} (an estimate, not CLIP's tokenizer)",
            "skipped": skipped,
        }
    )

    if out_dir is not None and n > 0:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        idx = _sample_indices(n, samples)
        # Centre crops, whatever the data set's training policy: the grid shows the data.
        images = torch.stack([ds.image(i, resolution) for i in idx])  # [K, 3, R, R]
        captions = [ds.captions(i)[0] for i in idx]
        caption_grid(images, captions, nrow=min(4, len(idx))).save(out / "samples.png")
        result["samples"] = str(out / "samples.png")
        (out / "inspect.json").write_text(json.dumps(result, indent=2))
        log.info("wrote %s and %s", out / "inspect.json", out / "samples.png")
    return result


def inspect_dataset(
    path: str | Path,
    format: str = "auto",
    out_dir: str | Path | None = None,
    resolution: int = 64,
    split: str = "train",
    **options: Any,
) -> dict[str, Any]:
    """Statistics of the data set at `path`, as a JSON-ready dict.

    Keys: format, path, num_images, num_captions, captions_per_image (min/mean/median/max),
    resolutions (width/height min/median/max, most_common sizes, how many are smaller than
    `resolution`), caption_words (min/mean/median/max), captions_over_77_tokens_estimate,
    skipped (total, by_reason, first_paths, summary). With `out_dir`, also writes
    `inspect.json` and `samples.png` (up to 16 centre-cropped images at `resolution`, with
    their first caption). `options` go to the loader (see `open_dataset`).
    """
    fmt = detect_format(path) if format == "auto" else format
    ds = open_dataset(path, format=fmt, split=split, preprocess=Preprocess(), **options)
    return summarize(
        ds, out_dir=out_dir, resolution=resolution, header={"format": fmt, "path": str(path), "split": split}
    )


def format_report(d: dict[str, Any]) -> str:
    """A human-readable printout of `inspect_dataset`'s dict."""
    lines = [
        f"data set:   {d.get('name', '?')}  ({d.get('format', '?')}, split {d.get('split', '?')})",
        f"path:       {d.get('path', '?')}",
        f"images:     {d['num_images']}",
        f"captions:   {d['num_captions']}  (per image min {d['captions_per_image']['min']:.0f}, "
        f"mean {d['captions_per_image']['mean']:.2f}, max {d['captions_per_image']['max']:.0f})",
    ]
    r = d.get("resolutions") or {}
    if r:
        w, h = r["width"], r["height"]
        common = ", ".join(f"{s} ({c})" for s, c in r["most_common"])
        lines += [
            f"width:      min {w['min']:.0f}, median {w['median']:.0f}, max {w['max']:.0f}",
            f"height:     min {h['min']:.0f}, median {h['median']:.0f}, max {h['max']:.0f}",
            f"common:     {common}",
        ]
        if r.get("smaller_than_resolution"):
            lines.append(
                f"            {r['smaller_than_resolution']} image(s) smaller than the requested resolution (upscaled)"
            )
    cw = d["caption_words"]
    lines.append(f"words:      per caption min {cw['min']:.0f}, mean {cw['mean']:.1f}, max {cw['max']:.0f}")
    if d.get("captions_over_77_tokens_estimate"):
        lines.append(
            f"            ~{d['captions_over_77_tokens_estimate']} caption(s) likely exceed 77 tokens "
            f"(estimate: {d.get('tokens_estimate_note', '')}); they will be truncated"
        )
    sk = d["skipped"]
    if sk["total"]:
        lines.append(f"skipped:    {sk['total']}")
        for reason, count in sk["by_reason"].items():
            first = ", ".join(sk["first_paths"].get(reason, [])[:3])
            lines.append(f"  {count:6d} {reason}: {first}{', ...' if count > 3 else ''}")
    else:
        lines.append("skipped:    none")
    if d.get("samples"):
        lines.append(f"samples:    {d['samples']}")
    return "\n".join(lines)
