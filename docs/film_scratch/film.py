"""Scratch: stage I generator with FiLM (conditional batch norm) from c in every upsampling block.
FILM=1 patches; FILM=0 runs the stock model. Then runs the stackgan CLI / train with the remaining args."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
import torch
from torch import nn

from stackgan.models import stage1 as S


class FiLM(nn.Module):
    def __init__(self, bn, cond_dim):
        super().__init__()
        self.bn = bn
        self.film = nn.Linear(cond_dim, 2 * bn.num_features)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)
        self.c = None

    def forward(self, x):
        h = self.bn(x)
        g, b = self.film(self.c).chunk(2, 1)
        return h * (1 + g[:, :, None, None].to(h.dtype)) + b[:, :, None, None].to(h.dtype)


if os.environ.get("FILM") == "1":
    orig_init = S.Stage1Generator.__init__

    def init(self, *a, **k):
        orig_init(self, *a, **k)
        for blk in self.ups:
            blk[2] = FiLM(blk[2], self.cond_dim)

    def forward(self, text, z, eps=None, noise_scale=1.0):
        c, mu, logvar = self.ca(text, eps, noise_scale)
        for blk in self.ups:
            blk[2].c = c
        with torch.autocast(text.device.type, enabled=False):
            h = self.fc(torch.cat([z.float(), c], dim=1)).view(-1, self.ch0, 4, 4)
        return self.to_rgb(self.ups(h)), mu, logvar

    S.Stage1Generator.__init__ = init
    S.Stage1Generator.forward = forward

if sys.argv[1] == "train":
    from stackgan.cli import train_main

    sys.argv = ["train.py"] + sys.argv[2:]
    sys.exit(train_main())
else:
    from stackgan.cli import main

    sys.exit(main(sys.argv[1:]))
