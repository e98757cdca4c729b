"""Recompute the batch-norm statistics of a pipeline's generators for their own (EMA) weights.

Usage: python docs/bn_stats/recalibrate.py PIPELINE OUT [--data shapes|FOLDER] [--batches 200] [--batch 64] [--group 4]

The EMA generator's weights average about the last 1 / (1 - decay) steps, while the batch-norm
statistics it carries are copied from the raw generator (the last few steps' batches). This script
resets every BatchNorm of stage I and stage II, runs the EMA weights in train mode over captions of
the training data with fresh noise (momentum None: an exact average over all batches), and saves
the pipeline with those statistics to OUT.
"""

from __future__ import annotations

import argparse
import random
import sys

import torch

from stackgan.config import DataConfig
from stackgan.data import build_dataset
from stackgan.pipeline import StackGANPipeline


def captions_of(data: str) -> list[str]:
    """Every caption of the training split: the built-in shapes, or a folder (format detected)."""
    cfg = DataConfig() if data == "shapes" else DataConfig(name="folder", path=data)
    ds = build_dataset(cfg)
    return [c for i in range(len(ds)) for c in ds.captions(i)]


def reset_bn(module: torch.nn.Module) -> int:
    n = 0
    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
            n += 1
    return n


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("pipeline")
    ap.add_argument("out")
    ap.add_argument("--data", default="shapes")
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--group", type=int, default=4, help="samples per caption in a batch, as in training")
    args = ap.parse_args()
    torch.manual_seed(0)
    pipe = StackGANPipeline.from_pretrained(args.pipeline)
    caps = captions_of(args.data)
    rng = random.Random(0)
    g1, g2 = pipe.stage1, pipe.stage2
    print(f"reset {reset_bn(g1)} + {reset_bn(g2) if g2 is not None else 0} batch norms", file=sys.stderr)
    # Stage I first; then stage II on the recalibrated stage I in eval mode, as it is used.
    for g in [g1] if g2 is None else [g1, g2]:
        g.train()
        for _ in range(args.batches):
            chosen = rng.sample(caps, args.batch // args.group)
            text = pipe.encode(chosen).float().repeat_interleave(args.group, dim=0)
            n = text.shape[0]
            low = g1(text, torch.randn(n, g1.z_dim), torch.randn(n, g1.cond_dim))[0]
            if g is g2:
                g2(low, text, torch.randn(n, g2.cond_dim))
        g.eval()
    pipe.save_pretrained(args.out)
    print(f"saved {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
