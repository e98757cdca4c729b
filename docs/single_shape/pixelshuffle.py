"""Scratch: run a script with stage I's upsampling blocks as a 3x3 convolution to 4x the channels
followed by PixelShuffle(2) (sub-pixel convolution, Shi et al. 2016), ICNR-initialised (Aitken et
al. 2017: the four sub-pixel kernels start equal, so at step 0 the block is a 3x3 convolution
followed by nearest x2 upsampling and draws no checkerboard; each of the four output phases then
learns its own kernel).

    python docs/single_shape/pixelshuffle.py train.py --config ... | ... read_shapes.py RUN DATA
"""

import runpy
import sys

import torch
from torch import nn

import stackgan.models.blocks as blocks
import stackgan.models.stage1 as stage1


class SubPixelConv(nn.Sequential):
    def __init__(self, in_ch: int, out_ch: int):
        conv = nn.Conv2d(in_ch, 4 * out_ch, 3, 1, 1, bias=False)
        super().__init__(conv, nn.PixelShuffle(2))

    def icnr_(self) -> None:
        conv = self[0]
        k = torch.empty(conv.out_channels // 4, *conv.weight.shape[1:]).normal_(0.0, 0.02)
        with torch.no_grad():
            conv.weight.copy_(k.repeat_interleave(4, dim=0))


def up_block(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(nn.Identity(), SubPixelConv(in_ch, out_ch), nn.BatchNorm2d(out_ch), nn.ReLU(True))


_init = blocks.init_weights


def init_weights(module: nn.Module) -> None:
    _init(module)
    for m in module.modules():
        if isinstance(m, SubPixelConv):
            m.icnr_()


blocks.up_block = stage1.up_block = up_block
blocks.init_weights = stage1.init_weights = init_weights
script, sys.argv = sys.argv[1], sys.argv[1:]
runpy.run_path(script, run_name="__main__")
