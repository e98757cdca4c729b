"""Inference-only speed-ups for the generators, each optional and each checked against the plain path.

- `fold_batchnorm`: eval-mode BatchNorm folded into the preceding convolution / linear layer
  (one op instead of two, no change in the maths beyond float rounding).
- `deconv_upsampling`: each nearest x2 upsampling + 3x3 convolution computed as one 4x4 stride-2
  transposed convolution (the same maths: 16 instead of 36 multiply-adds per output pixel and
  channel pair, and no upsampled copy of the input in memory).
- channels_last memory format for the convolutions (oneDNN's preferred layout).
- bfloat16 autocast where the CPU has native bf16 units (AMX / AVX512-BF16) or on CUDA, with the
  convolution weights stored in bf16 (autocast would otherwise cast them again on every call).
- `torch.compile`, guarded: when compiling fails (no C++ compiler, an unsupported op), the
  generator runs eagerly with a warning instead of failing the request.

`tests/test_optimize.py` checks the optimised generators against the plain ones, and
`python -m benchmarks` measures what each option gains.
"""

from __future__ import annotations

import copy
import functools
import logging

import torch
from torch import nn

log = logging.getLogger(__name__)


def _fuse_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode)
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    fused.weight.data = conv.weight.detach() * scale[:, None, None, None]
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused.bias.data = (bias - bn.running_mean) * scale + bn.bias.detach()
    return fused


def _fuse_linear_bn(lin: nn.Linear, bn: nn.BatchNorm1d) -> nn.Linear:
    fused = nn.Linear(lin.in_features, lin.out_features, bias=True)
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    fused.weight.data = lin.weight.detach() * scale[:, None]
    bias = lin.bias.detach() if lin.bias is not None else torch.zeros_like(bn.running_mean)
    fused.bias.data = (bias - bn.running_mean) * scale + bn.bias.detach()
    return fused


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """A copy of `module` in eval mode with every (Conv2d|Linear, BatchNorm) pair inside an
    nn.Sequential replaced by one fused layer (the BatchNorm becomes Identity)."""
    module = copy.deepcopy(module).eval()
    for seq in [m for m in module.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for a, b in zip(names, names[1:]):
            first, second = seq._modules[a], seq._modules[b]
            if isinstance(first, nn.Conv2d) and isinstance(second, nn.BatchNorm2d) and second.track_running_stats:
                seq._modules[a], seq._modules[b] = _fuse_conv_bn(first, second), nn.Identity()
            elif isinstance(first, nn.Linear) and isinstance(second, nn.BatchNorm1d) and second.track_running_stats:
                seq._modules[a], seq._modules[b] = _fuse_linear_bn(first, second), nn.Identity()
    return module.requires_grad_(False)


@functools.lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """True when the CPU has native bf16 matrix units (AMX or AVX512-BF16)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = f.read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def bf16_available(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_bf16()


# Which 3x3 taps of the upsampled grid each tap of the 4x4 transposed kernel sums (see UpsampleConv).
_DECONV_TAPS = torch.tensor([[0, 0, 1], [0, 1, 1], [1, 1, 0], [1, 0, 0]], dtype=torch.float64)


def _plain_3x3(conv: nn.Module) -> bool:
    """A 3x3 Conv2d with stride 1, padding 1 (zeros), no groups or dilation: what UpsampleConv rewrites."""
    return (isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3) and conv.stride == (1, 1)
            and conv.padding == (1, 1) and conv.groups == 1 and conv.dilation == (1, 1) and conv.padding_mode == "zeros")


class UpsampleConv(nn.Module):
    """Nearest x2 upsampling followed by a 3x3 convolution (stride 1, padding 1), computed as one
    4x4 stride-2 transposed convolution where the input is at least `min_side` pixels wide.

    Output row 2i + a of the conv on the upsampled map reads upsampled rows 2i + a - 1 .. 2i + a + 1,
    i.e. input rows {i - 1, i} for a = 0 (taps 0 | 1 + 2) and {i, i + 1} for a = 1 (taps 0 + 1 | 2);
    a transposed convolution with kernel 4, stride 2, padding 1 reaches exactly those rows with
    its taps 3, 1 (a = 0) and 2, 0 (a = 1), so each tap of the 4x4 kernel is a sum of 3x3 taps
    (`_DECONV_TAPS`, rows and columns alike). On the smallest maps (4x4 in the paper's
    stage I) oneDNN runs the plain pair faster, so those keep it.
    """

    def __init__(self, conv: nn.Conv2d, min_side: int = 8):
        super().__init__()
        if not _plain_3x3(conv):
            raise ValueError(f"UpsampleConv needs a 3x3 convolution with stride 1 and padding 1, got {conv}")
        self.conv, self.min_side = conv, min_side
        taps = _DECONV_TAPS.to(conv.weight.device)
        kernel = torch.einsum("ky,lx,oiyx->iokl", taps, taps, conv.weight.detach().double())
        self.weight = nn.Parameter(kernel.to(conv.weight.dtype), requires_grad=False)  # [C_in, C_out, 4, 4]
        self.bias = conv.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] < self.min_side:
            return self.conv(nn.functional.interpolate(x, scale_factor=2, mode="nearest"))
        return nn.functional.conv_transpose2d(x, self.weight, self.bias, stride=2, padding=1)


def deconv_upsampling(module: nn.Module, min_side: int = 8) -> nn.Module:
    """A copy of `module` with every (nearest x2 Upsample, 3x3 Conv2d) pair inside an nn.Sequential
    replaced by one `UpsampleConv` (the Upsample becomes Identity)."""
    module = copy.deepcopy(module)
    for seq in [m for m in module.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for a, b in zip(names, names[1:]):
            up, conv = seq._modules[a], seq._modules[b]
            if isinstance(up, nn.Upsample) and up.mode == "nearest" and up.size is None \
                    and up.scale_factor in (2, 2.0, (2, 2), (2.0, 2.0)) and _plain_3x3(conv):
                seq._modules[a], seq._modules[b] = nn.Identity(), UpsampleConv(conv, min_side)
    return module


def cast_convolutions(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Store the weights and biases of every convolution (and `UpsampleConv`) in `dtype`, in place.

    For bf16 autocast: autocast casts float32 weights to bf16 on every call (its cast cache
    only holds leaf tensors that require grad, and empties when the context exits); weights
    already in bf16 pass through. Linear layers and the conditioning stay float32, as the
    generators run those outside autocast."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, UpsampleConv)):
            m.to(dtype)
    return module


def optimize_generator(g: nn.Module, fold_bn: bool = True, deconv: bool = True, channels_last: bool = True,
                       bf16_weights: bool = False) -> nn.Module:
    """The inference copy of a generator: each option as in this module's docstring. The original
    is untouched; the copy is in eval mode with gradients off. With `bf16_weights` the copy
    must run under bf16 autocast."""
    g = fold_batchnorm(g) if fold_bn else copy.deepcopy(g).eval().requires_grad_(False)
    if deconv:
        g = deconv_upsampling(g)
    if channels_last:
        g = g.to(memory_format=torch.channels_last)
    if bf16_weights:
        cast_convolutions(g, torch.bfloat16)
    return g


class CompiledOrEager(nn.Module):
    """`torch.compile(module)` that falls back to `module` itself, for good, when compiling or
    running the compiled graph raises. Attributes the pipeline reads (z_dim, resolution, ...)
    come from the wrapped module."""

    def __init__(self, module: nn.Module, **compile_kwargs):
        super().__init__()
        self.module = module
        self.compiled = torch.compile(module, **compile_kwargs)
        self.failed: str | None = None

    def forward(self, *args, **kwargs):
        if self.failed is None:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 - any compiler failure means: run eagerly
                self.failed = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                log.warning("torch.compile failed for %s (%s); running it eagerly", type(self.module).__name__,
                            self.failed)
        return self.module(*args, **kwargs)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("module"), name)
