"""What shape the probe reads in 512 real squares at 32 px, sharp and blurred (a Gaussian of the
given std in pixels): how much of a generated blob's reading is its softness alone.

    python docs/single_shape/blur_reads.py DATA_DIR
"""

import collections
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from stackgan.data.shapes import SHAPES
from stackgan.metrics.probe import load_probe
from stackgan.training.losses import gaussian_blur

data = Path(sys.argv[1])
real = torch.stack([torch.from_numpy(np.array(Image.open(p).convert("RGB").resize((32, 32), Image.Resampling.BOX))).permute(2, 0, 1)
                    for p in sorted(data.glob("*.png"))[:512]])
probe, _ = load_probe()
for sigma in (0, 0.5, 0.75, 1.0, 1.5):
    images = gaussian_blur(real.float(), sigma).round().clamp(0, 255).to(torch.uint8)
    counts = collections.Counter(probe.predict(images)["shape"].tolist())
    print(f"blur {sigma:g} px: " + ", ".join(f"{SHAPES[k]} {v / len(images):.3f}" for k, v in sorted(counts.items())))
