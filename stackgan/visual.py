"""Pictures: sample sheets (a caption per row, its samples beside it) and loss plots."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image, ImageDraw


def sample_sheet(captions: Sequence[str], rows: Sequence[Sequence[torch.Tensor]], labels: Sequence[str] = (),
                 cell: int = 64, text_width: int = 200, gap: int = 8) -> Image.Image:
    """One row per caption: the caption, then one or more panels of uint8 `[K, 3, H, W]` images.

    Each panel's images are scaled to `cell` pixels (nearest) so stage I and stage II line up.
    `labels` name the panels in a header line.
    """
    n_panels = len(rows[0])
    ks = [panel.shape[0] for panel in rows[0]]
    width = text_width + sum(k * (cell + 2) + gap for k in ks)
    header = 14 if labels else 0
    canvas = Image.new("RGB", (width, header + len(rows) * (cell + 4)), "white")
    draw = ImageDraw.Draw(canvas)
    x = text_width
    for p in range(n_panels):
        if labels:
            draw.text((x, 1), labels[p], fill=(0, 0, 0))
        x += ks[p] * (cell + 2) + gap
    for r, (caption, panels) in enumerate(zip(captions, rows)):
        y = header + r * (cell + 4)
        for li, line in enumerate(textwrap.wrap(caption, text_width // 6)[: max(1, cell // 11)]):
            draw.text((2, y + 2 + 11 * li), line, fill=(0, 0, 0))
        x = text_width
        for panel in panels:
            for img in panel:
                pil = Image.fromarray(img.permute(1, 2, 0).numpy()).resize((cell, cell), Image.Resampling.NEAREST)
                canvas.paste(pil, (x, y))
                x += cell + 2
            x += gap
    return canvas


def latest_records(rows: Sequence[dict]) -> list[dict]:
    """One record per (stage, step), in step order. A resumed run logs again the steps after its
    checkpoint (and a stage trained again logs all of its steps again): the later record of a step
    is the one the weights came from, so it replaces the earlier one."""
    latest = {(r["stage"], r["step"]): r for r in rows}
    return [latest[key] for key in sorted(latest)]


def plot_metrics(jsonl: str | Path, out: str | Path, keys: Sequence[str] = ("loss_d", "loss_g", "kl")) -> Path | None:
    """Plot training curves from a metrics.jsonl (one figure, one panel per stage)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in Path(jsonl).read_text(encoding="utf-8").splitlines() if line.strip()]
    if not rows:
        return None
    rows = latest_records(rows)
    stages = sorted({r["stage"] for r in rows})
    fig, axes = plt.subplots(1, len(stages), figsize=(6 * len(stages), 3.5), squeeze=False)
    for ax, stage in zip(axes[0], stages):
        sub = [r for r in rows if r["stage"] == stage]
        for k in keys:
            pts = [(r["step"], r[k]) for r in sub if k in r]
            if pts:
                ax.plot(*zip(*pts), label=k)
        for k in ("d_real", "d_wrong", "d_fake"):
            pts = [(r["step"], r[k]) for r in sub if k in r]
            if pts:
                ax.plot(*zip(*pts), label=k, linestyle="--")
        ax.set_title(f"stage {stage}")
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return Path(out)
