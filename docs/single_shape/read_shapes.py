"""What shape the probe reads in 512 samples of a run's stage I (or II) (the first caption of the
data's first 128 images, 4 samples each), and in 512 of the data's real images at the same size.

    python docs/single_shape/read_shapes.py RUN_DIR DATA_DIR [STAGE]
"""

import collections
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from stackgan.data.shapes import SHAPES
from stackgan.metrics.probe import load_probe
from stackgan.pipeline import StackGANPipeline


def shares(pred: torch.Tensor) -> str:
    counts = collections.Counter(pred.tolist())
    return ", ".join(f"{SHAPES[k]} {v / len(pred):.3f}" for k, v in sorted(counts.items()))


run, data = Path(sys.argv[1]), Path(sys.argv[2])
stage = int(sys.argv[3]) if len(sys.argv) > 3 else 1
captions = [p.read_text().splitlines()[0] for p in sorted(data.glob("*.txt"))[:128]]
images = StackGANPipeline.from_pretrained(run / "pipeline")(captions, 4, seed=0, stage=stage, output_type="pt").images
side = images.shape[-1]
probe, _ = load_probe()
print(f"{run.name}: generated (stage {stage}, {side} px), {len(images)}: {shares(probe.predict(images)['shape'])}")
real = torch.stack([torch.from_numpy(np.array(Image.open(p).convert("RGB").resize((side, side), Image.Resampling.BOX))).permute(2, 0, 1)
                    for p in sorted(data.glob("*.png"))[:512]])
print(f"{data.name}: real at {side} px, {len(real)}: {shares(probe.predict(real)['shape'])}")
