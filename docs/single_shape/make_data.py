"""A one-shape `shapes` folder in the txt-pairs layout: 6,000 images at 64 px, 3 captions each.

    python docs/single_shape/make_data.py square runs/single/square
"""

import random
import sys
from pathlib import Path

from PIL import Image

from stackgan.data.shapes import make_caption, render, sample_attributes

shape, out = sys.argv[1], Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
rng = random.Random(0)
for i in range(6000):
    attrs = sample_attributes(rng, fixed={"shape": shape})
    Image.fromarray(render(attrs, 64)).save(out / f"img{i:05d}.png")
    (out / f"img{i:05d}.txt").write_text("\n".join(make_caption(rng, attrs.named()) for _ in range(3)) + "\n")
