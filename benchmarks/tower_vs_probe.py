"""Does the generator draw shapes, or only what the text-image matching loss rewards?
`python -m benchmarks.tower_vs_probe [--model PATH|default] [--out DIR]`.

The matching loss (`train.clip_weight`) pushes generated images towards their caption as the
text encoder's frozen image tower sees them. This script reads the samples of the shapes
benchmark's prompts that name a shape twice: with the tower (zero-shot, among one caption per
shape, "there is a <shape>") and with the independent probe that `stackgan eval` uses. The same
share from both means the generator draws the shape; a much higher share from the tower means
the generator learned features that satisfy the tower without drawing the shape (the matching
loss being gamed). Real test images are read the same way for reference.

Writes DIR/tower_vs_probe.json and .md when --out is given.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks import write_json


def read_shapes(images: torch.Tensor, encoder, probe) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images `[N, 3, H, W]` -> (the tower's zero-shot shape index, the probe's) per image."""
    from stackgan.data.shapes import SHAPES

    captions = encoder.encode([f"there is a {s}" for s in SHAPES])
    tower = torch.cat([encoder.encode_images(x) for x in torch.split(images, 512)]) @ captions.T
    return tower.argmax(1).numpy(), probe.predict(images)["shape"].numpy()  # the probe resizes to 64 px itself


def shares(named: np.ndarray, tower: np.ndarray, probe: np.ndarray) -> dict[str, dict[str, float]]:
    """Per named shape (and overall): how often each reader reads the named shape."""
    from stackgan.data.shapes import SHAPES

    out = {}
    for k, s in enumerate(SHAPES):
        m = named == k
        if m.any():
            out[s] = {"n": int(m.sum()), "tower": float((tower[m] == k).mean()), "probe": float((probe[m] == k).mean())}
    out["all"] = {"n": int(len(named)), "tower": float((tower == named).mean()), "probe": float((probe == named).mean())}
    return out


def tower_vs_probe(pipe, samples_per_prompt: int = 16, num_prompts: int | None = None, seed: int = 0) -> dict:
    """Generated samples of the prompts naming a shape, and as many real test images, read by both readers."""
    from stackgan.data.shapes import SHAPES, ShapesDataset
    from stackgan.metrics.probe import load_probe
    from stackgan.metrics.shapes_bench import load_prompt_set

    encoder = pipe.text_encoder
    if not encoder.has_image_tower:
        raise ValueError(f"{pipe.model_id}'s text encoder has no image tower: nothing to compare the probe with")
    probe, _ = load_probe()
    prompts = [p for p in load_prompt_set(num_prompts=num_prompts)["prompts"] if "shape" in p["attributes"]]
    texts = [p["prompt"] for p in prompts]
    named = np.repeat([SHAPES.index(p["attributes"]["shape"]) for p in prompts], samples_per_prompt)
    images = torch.cat([pipe(texts[i:i + 16], num_images_per_prompt=samples_per_prompt, seed=seed + i, output_type="pt").images
                        for i in range(0, len(texts), 16)])  # fmt: skip
    generated = shares(named, *read_shapes(images, encoder, probe))
    real_ds = ShapesDataset(len(named), "test", seed=0, cache_dir="")
    real = torch.stack([real_ds.image(i, 64) for i in range(len(real_ds))])
    real_named = np.array([SHAPES.index(real_ds.attributes(i).shape) for i in range(len(real_ds))])
    return {"model_id": pipe.model_id, "prompts": len(prompts), "samples_per_prompt": samples_per_prompt, "seed": seed,
            "tower_captions": "there is a <shape>", "generated": generated,
            "real": shares(real_named, *read_shapes(real, encoder, probe))}


def render_table(r: dict) -> str:
    lines = [f"Samples of {r['model_id']} for the {r['prompts']} prompts naming a shape (x {r['samples_per_prompt']}), "
             "and real test images: the share read as the named shape.", "",
             "| shape | generated: tower | generated: probe | real: tower | real: probe |", "|---|---:|---:|---:|---:|"]
    for s, g in r["generated"].items():
        rr = r["real"].get(s, {})
        lines.append(f"| {s} | {g['tower']:.2f} | {g['probe']:.2f} | {rr.get('tower', float('nan')):.2f} | "
                     f"{rr.get('probe', float('nan')):.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="pipeline folder (default: the bundled model)")
    p.add_argument("--samples-per-prompt", type=int, default=16)
    p.add_argument("--num-prompts", type=int, default=None, help="only the first N prompts of the prompt set")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="folder for tower_vs_probe.json and .md")
    args = p.parse_args(argv)
    from stackgan.pipeline import StackGANPipeline

    start = time.time()
    pipe = StackGANPipeline.from_pretrained(args.model)
    r = tower_vs_probe(pipe, args.samples_per_prompt, args.num_prompts, args.seed)
    r["wall_s"] = round(time.time() - start, 1)
    table = render_table(r)
    print(table)
    if args.out:
        out = Path(args.out)
        write_json(out / "tower_vs_probe.json", r)
        (out / "tower_vs_probe.md").write_text(table + "\n", encoding="utf-8")
        print(f"wrote {out / 'tower_vs_probe.json'} in {r['wall_s']} s")


if __name__ == "__main__":
    main()
