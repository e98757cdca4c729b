"""Batch generation from a list of prompts into a folder: PNGs, a grid per prompt, a manifest."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .data.base import make_grid
from .pipeline import StackGANPipeline
from .prompts import slugify


def generate_to_folder(pipe: StackGANPipeline, prompts: list[tuple[int, str]], out_dir: str | Path, num_images: int = 8,
                       seed: int = 0, stage: int = 2, noise_scale: float = 1.0, truncation: float | None = None,
                       progress: bool = True) -> Path:
    """Write `out_dir/NNNN-slug/sample-KK.png`, `out_dir/NNNN-slug/grid.png` and `out_dir/manifest.jsonl`.

    Prompt k (0-based) is generated with seed `seed + k`, so any prompt can be regenerated
    alone with the seed recorded in the manifest.
    """
    from PIL import Image
    from tqdm.auto import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / "manifest.jsonl"
    rows = []
    for k, (line_no, prompt) in enumerate(tqdm(prompts, desc="prompts", disable=not progress)):
        s = seed + k
        result = pipe(prompt, num_images_per_prompt=num_images, seed=s, stage=stage, output_type="pt",
                      noise_scale=noise_scale, truncation=truncation)
        folder = out / f"{k:04d}-{slugify(prompt)}"  # index prefix: unique even for equal slugs
        folder.mkdir(exist_ok=True)
        images: torch.Tensor = result.images
        for i, img in enumerate(images):
            name = folder / f"sample-{i:02d}.png"
            Image.fromarray(img.permute(1, 2, 0).numpy()).save(name)
            rows.append({"prompt": prompt, "line": line_no, "seed": s, "sample": i,
                         "file": str(name.relative_to(out)), "model": pipe.model_id, "stage": stage,
                         "noise_scale": noise_scale, "truncation": truncation, "precision": pipe.precision,
                         "candidates": pipe.candidates, "diversity": pipe.diversity,
                         "notes": result.notes})
        Image.fromarray(make_grid(images, nrow=min(num_images, 8))).save(folder / "grid.png")
    with open(manifest, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return manifest
