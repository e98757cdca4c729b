"""Inference-only speed-ups for the generators, each optional and each checked against the plain path.

- `fold_batchnorm`: eval-mode BatchNorm folded into the preceding convolution / linear layer
  (one op instead of two, no change in the maths beyond float rounding).
- channels_last memory format for the convolutions (oneDNN's preferred layout).
- bfloat16 autocast where the CPU has native bf16 units (AMX / AVX512-BF16) or on CUDA.
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


def optimize_generator(g: nn.Module, channels_last: bool = True) -> nn.Module:
    """fold_batchnorm + (optionally) channels_last weights; returns a new eval-mode module."""
    g = fold_batchnorm(g)
    if channels_last:
        g = g.to(memory_format=torch.channels_last)
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
