"""The shapes probe: a small CNN that reads all five attributes back from an image.

    probe = load_probe()                          # the one shipped in stackgan/assets/probe
    pred = probe.predict(images_uint8)            # {"shape": LongTensor [N], "colour": ..., ...}
    feats = probe.features(prepare(images_uint8)) # [N, feature_dim] penultimate features (probe-FID)

It is trained on real `shapes` images at 64 px (`python -m stackgan.metrics.train_probe`).
Images of any other size are resized to 64 px first (`RESIZE_MODE`, recorded in every
result). Its held-out accuracy per attribute lives in its `config.json` and is reported
beside every benchmark number, because a faithfulness score can never exceed what the probe
can read.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data.shapes import ATTRIBUTES

PROBE_VERSION = "shapes-probe-v2"
PROBE_RESOLUTION = 64
DEFAULT_PROBE_DIR = Path(__file__).resolve().parents[1] / "assets" / "probe"
RESIZE_MODE = "torch.nn.functional.interpolate(mode='bilinear', antialias=True, align_corners=False) to 64 px"


class ProbeError(ValueError):
    """The probe folder is missing or broken; the message says which file."""


class ShapesProbe(nn.Module):
    """Conv net `[B, 3, 64, 64]` floats in [0, 1] -> one logit vector per attribute.

    Args:
        widths:      channels of the 3x3 conv layers (conv + BatchNorm + ReLU each).
        strides:     their strides; the product must be 16 (64 px -> 4x4).
        feature_dim: width F of the penultimate layer (the probe-FID feature space).
        heads:       attribute name -> number of values (default: the shapes ATTRIBUTES).
    """

    def __init__(self, widths: tuple[int, ...] = (32, 64, 96, 128, 64), strides: tuple[int, ...] = (2, 2, 2, 2, 1),
                 feature_dim: int = 128, heads: dict[str, int] | None = None):
        super().__init__()
        if len(widths) != len(strides) or math.prod(strides) != PROBE_RESOLUTION // 4:
            raise ValueError(f"need one stride per width and strides multiplying to 16, got {widths}, {strides}")
        self.widths, self.strides = tuple(int(w) for w in widths), tuple(int(s) for s in strides)
        self.feature_dim = int(feature_dim)
        self.head_sizes = dict(heads or {k: len(v) for k, v in ATTRIBUTES.items()})
        layers, c_in = [], 3
        for w, s in zip(self.widths, self.strides):
            layers += [nn.Conv2d(c_in, w, 3, stride=s, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            c_in = w
        self.body = nn.Sequential(*layers)
        # Flatten (not global pooling): position is one of the attributes.
        self.fc = nn.Linear(c_in * 4 * 4, self.feature_dim)
        self.heads = nn.ModuleDict({k: nn.Linear(self.feature_dim, n) for k, n in self.head_sizes.items()})

    def config(self) -> dict[str, Any]:
        return {"widths": list(self.widths), "strides": list(self.strides), "feature_dim": self.feature_dim, "heads": self.head_sizes}

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """float `[B, 3, 64, 64]` in [0, 1] -> penultimate features `[B, F]` (after ReLU)."""
        if x.ndim != 4 or x.shape[1:] != (3, PROBE_RESOLUTION, PROBE_RESOLUTION):
            raise ValueError(f"the probe takes [B, 3, {PROBE_RESOLUTION}, {PROBE_RESOLUTION}] floats, got {tuple(x.shape)}")
        h = self.body((x - 0.5) / 0.25)  # [B, C, 4, 4]
        return F.relu(self.fc(h.flatten(1)))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.features(x)
        return {k: head(f) for k, head in self.heads.items()}

    @torch.inference_mode()
    def run(self, images: torch.Tensor, batch_size: int = 512) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """uint8 `[N, 3, H, W]` (any H = W) -> (penultimate features `[N, F]`, predicted value index per attribute `[N]`)."""
        self.eval()
        feats: list[torch.Tensor] = []
        preds: dict[str, list[torch.Tensor]] = {k: [] for k in self.head_sizes}
        for i in range(0, images.shape[0], batch_size):
            f = self.features(prepare(images[i : i + batch_size]))
            feats.append(f)
            for k, head in self.heads.items():
                preds[k].append(head(f).argmax(1))
        if not feats:
            return torch.empty(0, self.feature_dim), {k: torch.empty(0, dtype=torch.long) for k in self.head_sizes}
        return torch.cat(feats), {k: torch.cat(v) for k, v in preds.items()}

    def predict(self, images: torch.Tensor, batch_size: int = 512) -> dict[str, torch.Tensor]:
        """uint8 `[N, 3, H, W]` -> predicted value index per attribute, LongTensor `[N]` each."""
        return self.run(images, batch_size)[1]

    def embed(self, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """uint8 `[N, 3, H, W]` -> penultimate features `[N, F]`."""
        return self.run(images, batch_size)[0]


class ProbeFeatures(nn.Module):
    """The probe as a torchmetrics feature extractor: floats `[B, 3, H, W]` in [0, 1] -> `[B, F]`.

    Use with `FrechetInceptionDistance(feature=ProbeFeatures(probe), normalize=True)`.
    """

    def __init__(self, probe: ShapesProbe):
        super().__init__()
        self.probe = probe.eval()
        self.num_features = probe.feature_dim

    def train(self, mode: bool = True) -> "ProbeFeatures":  # never leaves eval mode (BatchNorm statistics)
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        return self.probe.features(resize_to_probe(x.float()))


def resize_to_probe(x: torch.Tensor) -> torch.Tensor:
    """float `[B, 3, H, W]` -> `[B, 3, 64, 64]` (no-op at 64 px; else `RESIZE_MODE`)."""
    if x.shape[-2:] == (PROBE_RESOLUTION, PROBE_RESOLUTION):
        return x
    return F.interpolate(x, size=(PROBE_RESOLUTION, PROBE_RESOLUTION), mode="bilinear", antialias=True, align_corners=False)


def prepare(images: torch.Tensor) -> torch.Tensor:
    """uint8 `[N, 3, H, W]` -> float `[N, 3, 64, 64]` in [0, 1], resized with `RESIZE_MODE` when H != 64."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected uint8 images [N, 3, H, W], got {images.dtype} {tuple(images.shape)}")
    return resize_to_probe(images.float() / 255.0)


def resize_mode_for(resolution: int) -> str:
    """What happens to images of this resolution before the probe sees them (recorded in results)."""
    return "none (already 64 px)" if resolution == PROBE_RESOLUTION else f"{resolution} px -> {RESIZE_MODE}"


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_probe(probe: ShapesProbe, folder: str | Path, info: dict[str, Any]) -> Path:
    """Write `folder/model.safetensors` and `folder/config.json` (architecture, `info`, weights sha256)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in probe.state_dict().items()}
    weights = folder / "model.safetensors"
    save_file(state, str(weights), metadata={"version": PROBE_VERSION})
    cfg = {"version": PROBE_VERSION, "class": "ShapesProbe", "args": probe.config(), "resolution": PROBE_RESOLUTION,
           "input": "float [B, 3, 64, 64] in [0, 1]; other sizes resized with " + RESIZE_MODE,
           **info, "weights_sha256": file_sha256(weights)}
    (folder / "config.json").write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
    return folder


_CACHE: dict[str, tuple[ShapesProbe, dict[str, Any]]] = {}


def load_probe(folder: str | Path | None = None) -> tuple[ShapesProbe, dict[str, Any]]:
    """Load a probe folder (default: the shipped one) -> (probe in eval mode, its config dict).

    The weights file's sha256 must equal the one recorded in config.json.
    """
    from safetensors.torch import load_file

    folder = Path(folder) if folder else DEFAULT_PROBE_DIR
    key = str(folder.resolve())
    if key in _CACHE:
        return _CACHE[key]
    cfg_path, weights = folder / "config.json", folder / "model.safetensors"
    for p in (cfg_path, weights):
        if not p.is_file():
            raise ProbeError(f"probe file {p} is missing; train one with "
                             f"`python -m stackgan.metrics.train_probe --out {folder}`")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        args = cfg["args"]
    except (ValueError, KeyError) as e:
        raise ProbeError(f"{cfg_path} is not a probe config ({e!r})") from None
    sha = file_sha256(weights)
    if cfg.get("weights_sha256") and cfg["weights_sha256"] != sha:
        raise ProbeError(f"{weights} has sha256 {sha[:12]}..., but {cfg_path} records {cfg['weights_sha256'][:12]}...: "
                         "the weights were changed or truncated; retrain or restore them")
    probe = ShapesProbe(tuple(args["widths"]), tuple(args["strides"]), args["feature_dim"], args["heads"])
    probe.load_state_dict(load_file(str(weights)), strict=True)
    probe.eval().requires_grad_(False)
    cfg["weights_sha256"] = sha
    _CACHE[key] = (probe, cfg)
    return probe, cfg
