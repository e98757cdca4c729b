"""Regenerate the README figures: `python docs/make_figures.py` (CPU, about a minute)."""

from __future__ import annotations

from pathlib import Path

import torch

from stackgan.data.base import caption_grid
from stackgan.data.shapes import ShapesDataset
from stackgan.pipeline import StackGANPipeline
from stackgan.visual import sample_sheet

DOCS = Path(__file__).parent
PROMPTS = [
    "a red circle",
    "a large blue square on a white background",
    "a green triangle in the bottom left corner",
    "a yellow star on a black background",
    "a small pink hexagon at the top",
    "a purple diamond against gray",
]


def main() -> None:
    ds = ShapesDataset(size=16, split="train", seed=0, cache_dir="")
    imgs = torch.stack([ds.image(i, 64) for i in range(16)])
    caption_grid(imgs, [ds.captions(i)[0] for i in range(16)], nrow=8).save(DOCS / "shapes_dataset.png")

    pipe = StackGANPipeline.from_pretrained()
    pipe.set_sampling(**(pipe.recommended_sampling or {}))  # as stackgan generate and the app serve it
    rows = []
    for k, prompt in enumerate(PROMPTS):
        out = pipe(prompt, num_images_per_prompt=8, seed=k, output_type="pt")
        rows.append([out.stage1_images, out.images])
    sample_sheet(PROMPTS, rows, ["stage I (32 px)", "stage II (64 px)"], cell=64).save(DOCS / "bundled_samples.png")


if __name__ == "__main__":
    main()
