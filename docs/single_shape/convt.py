"""Scratch: run a script with stage I's upsampling blocks as learned 4x4 stride-2 transposed
convolutions (DCGAN's generator) instead of nearest x2 + 3x3 convolution (StackGAN's).

    python docs/single_shape/convt.py train.py --config ... | python docs/single_shape/convt.py docs/single_shape/read_shapes.py RUN DATA

The block keeps up_block's four-module layout (an identity where the upsampling was), so FiLM
and the pipeline's save/load work unchanged; `stackgan.optimize` is not used by either script.
"""

import runpy
import sys

from torch import nn

import stackgan.models.blocks as blocks
import stackgan.models.stage1 as stage1


def up_block(in_ch: int, out_ch: int) -> nn.Sequential:
    conv = nn.ConvTranspose2d(in_ch, out_ch, 4, 2, 1, bias=False)
    nn.init.normal_(conv.weight, 0.0, 0.02)
    return nn.Sequential(nn.Identity(), conv, nn.BatchNorm2d(out_ch), nn.ReLU(True))


blocks.up_block = stage1.up_block = up_block
script, sys.argv = sys.argv[1], sys.argv[1:]
runpy.run_path(script, run_name="__main__")
