"""Supervised shape classification of real 32 px `shapes` images with the stage I discriminator's
image encoder (configs/shapes.yaml: df 32) and a linear head: can those layers learn shape at all,
and how fast, with each `model.d_norm`, `model.d_depth` and `model.d1_upsample`? Prints the held-out accuracy every 500 steps."""

import argparse
import time

import torch
import torch.nn as nn

from stackgan.data.shapes import ShapesDataset
from stackgan.models.stage1 import Stage1Discriminator

p = argparse.ArgumentParser(description=__doc__)
p.add_argument("--norm", choices=["batch", "spectral", "none"], default="spectral")
p.add_argument("--lr", type=float, default=2e-4)
p.add_argument("--steps", type=int, default=2000)
p.add_argument("--depth", type=int, default=0, help="model.d_depth: extra conv3x3 layers per scale")
p.add_argument("--upsample", type=int, default=1, help="model.d1_upsample: read the images enlarged x2 or x4")
args = p.parse_args()
torch.manual_seed(0)
torch.set_num_threads(1)
data = ShapesDataset(20000, "train")
x = data.images(32).float() / 127.5 - 1
names = sorted({data.attributes(i).shape for i in range(len(data))})
y = torch.tensor([names.index(data.attributes(i).shape) for i in range(len(data))])
x_test, y_test, x_train, y_train = x[:2000], y[:2000], x[2000:], y[2000:]
D = Stage1Discriminator(64, 64, df=32, resolution=32, minibatch="none", norm=args.norm, cond="projection",
                        depth=args.depth, upsample=args.upsample)
encoder = D.encoder.eval()  # eval: sizing the head must not step spectral norm's power iteration
with torch.no_grad():
    head = nn.Linear(encoder(x[:1]).numel(), len(names))  # 4x4 features, flattened
encoder.train()
opt = torch.optim.Adam([*encoder.parameters(), *head.parameters()], args.lr, betas=(0.5, 0.999))
t0 = time.time()
for step in range(1, args.steps + 1):
    idx = torch.randint(len(x_train), (64,))
    loss = nn.functional.cross_entropy(head(encoder(x_train[idx]).flatten(1)), y_train[idx])
    opt.zero_grad()
    loss.backward()
    opt.step()
    if step % 500 == 0:
        encoder.eval()
        with torch.no_grad():
            acc = (head(encoder(x_test).flatten(1)).argmax(1) == y_test).float().mean().item()
        encoder.train()
        up = f" upsample {args.upsample}" if args.upsample > 1 else ""
        print(f"norm {args.norm} lr {args.lr:g} depth {args.depth}{up} step {step}: loss {loss.item():.3f}, held-out shape accuracy {acc:.3f} "
              f"({time.time() - t0:.0f} s)", flush=True)
