"""open_clip text encoders behind one small interface, loaded from local files only.

    enc = load_text_encoder("ViT-B-32", pretrained="/weights/open_clip_model.safetensors")
    enc = load_text_encoder("local-dir:/path/to/saved/encoder")   # what train-text writes
    emb = enc.encode(["a red circle", "a blue star"])             # [2, D], unit norm

Every encoder has an identity (model name, weights hash, embedding dim) that checkpoints
and pipelines store, so a generator is never paired with the wrong encoder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .. import env  # noqa: F401  (offline settings before open_clip / huggingface_hub import)

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).parent / "model_configs"
LOCAL_DIR = "local-dir:"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_registered = False


class TextEncoderError(RuntimeError):
    """The text encoder cannot be loaded; the message says which file is wrong or missing."""


def _open_clip():
    global _registered
    import open_clip

    if not _registered:
        open_clip.add_model_config(CONFIG_DIR)
        _registered = True
    return open_clip


@dataclass(frozen=True)
class EncoderIdentity:
    model: str  # open_clip model name (for local-dir encoders: the name it was created from)
    weights_sha256: str  # hash of the text tower's parameters (random init included)
    dim: int  # embedding dimension D

    def to_dict(self) -> dict:
        return asdict(self)

    def short(self) -> str:
        return f"{self.model}@{self.weights_sha256[:12]} (dim {self.dim})"


def weights_hash(model: torch.nn.Module) -> str:
    """sha256 over every parameter and buffer, in name order, as float32 bytes."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


class TextEncoder:
    """A frozen open_clip model used for its text tower (and, when present, its image tower).

    Args:
        model:      an open_clip CLIP model.
        tokenizer:  its tokenizer (callable: list[str] -> LongTensor `[N, context]`).
        name:       model name recorded in the identity.
    """

    def __init__(self, model: torch.nn.Module, tokenizer, name: str, source_dir: Path | None = None):
        self.source_dir = source_dir  # folder it was loaded from (local-dir encoders)
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.name = name
        self.context_length = int(getattr(model, "context_length", 77))
        self.dim = int(model.text_projection.shape[1] if hasattr(model, "text_projection") and model.text_projection is not None
                       else model.encode_text(tokenizer(["x"])).shape[1])
        self._identity: EncoderIdentity | None = None

    @property
    def identity(self) -> EncoderIdentity:
        if self._identity is None:
            self._identity = EncoderIdentity(self.name, weights_hash(self.model), self.dim)
        return self._identity

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: torch.device | str) -> "TextEncoder":
        self.model.to(device)
        return self

    def token_count(self, text: str) -> int:
        """Tokens the caption needs, start and end tokens included (> context_length = truncated)."""
        inner = getattr(self.tokenizer, "encode", None)
        if inner is None:
            return 0
        return len(inner(text)) + 2

    @torch.inference_mode()
    def encode(self, texts: list[str], batch_size: int = 512) -> torch.Tensor:
        """Captions -> unit-norm float32 embeddings `[N, D]` on the CPU. Long captions are truncated."""
        if isinstance(texts, str):
            raise TypeError("encode takes a list of captions, not one string")
        outs = []
        for i in range(0, len(texts), batch_size):
            ids = self.tokenizer(list(texts[i : i + batch_size])).to(self.device)
            outs.append(self.model.encode_text(ids, normalize=True).float().cpu())
        if not outs:
            return torch.empty(0, self.dim)
        return torch.cat(outs)

    @property
    def has_image_tower(self) -> bool:
        return getattr(self.model, "visual", None) is not None

    @torch.inference_mode()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 `[N, 3, H, W]` -> unit-norm image embeddings `[N, D]` (the CLIP image tower)."""
        return self.image_features(images.to(self.device).float() / 127.5 - 1.0).float().cpu()

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] `[N, 3, H, W]` -> unit-norm embeddings `[N, D]`, differentiable in the
        images (the tower's own weights stay frozen): the generator's text-image matching loss."""
        return self.model.encode_image(self._tower_input(images), normalize=True)

    def _tower_input(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] -> the tower's input: resized to its side, CLIP-normalised."""
        size = self.model.visual.image_size
        size = size[0] if isinstance(size, (tuple, list)) else size
        x = (images.float() + 1.0) / 2.0
        if x.shape[-1] != size:
            x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        mean = torch.tensor(CLIP_MEAN, device=x.device)
        std = torch.tensor(CLIP_STD, device=x.device)
        return (x - mean[:, None, None]) / std[:, None, None]

    def image_map(self, images: torch.Tensor, block: int = -1, side: int = 4) -> torch.Tensor:
        """Images in [-1, 1] `[N, 3, H, W]` -> the image tower's feature map after `block` (an index
        into its blocks, negative from the end; open_clip's `forward_intermediates`), average-pooled
        (or, when smaller, repeated) to `side x side`: `[N, C, side, side]`. Differentiable in the
        images; the tower's weights stay frozen. What a discriminator on the tower's features sees."""
        if not self.has_image_tower:
            raise ValueError(f"{self.identity.short()} has no image tower (a text-only encoder)")
        visual = self.model.visual
        if not hasattr(visual, "forward_intermediates"):
            raise ValueError(f"the image tower of {self.identity.short()} ({type(visual).__name__}) cannot return "
                             "intermediate feature maps (open_clip's forward_intermediates)")
        x = visual.forward_intermediates(self._tower_input(images), indices=[block], stop_early=True,
                                         intermediates_only=True)["image_intermediates"][0]
        if x.shape[-1] >= side:
            return torch.nn.functional.adaptive_avg_pool2d(x, side)
        return torch.nn.functional.interpolate(x, size=(side, side), mode="nearest")

    @property
    def logit_scale(self) -> float:
        """The contrastive temperature the model was trained with (exp of open_clip's logit_scale)."""
        scale = getattr(self.model, "logit_scale", None)
        return float(scale.exp()) if scale is not None else 100.0


def _hub_help(name: str, tag: str) -> str:
    open_clip = _open_clip()
    cfg = open_clip.get_pretrained_cfg(name, tag) or {}
    hub = cfg.get("hf_hub", "")
    where = f"the Hugging Face repository {hub.rstrip('/')}" if hub else (cfg.get("url") or "the open_clip release")
    return (
        f"open_clip weights {name!r} / {tag!r} are not on this machine and the network is off. "
        f"Download open_clip_model.safetensors (or open_clip_pytorch_model.bin) from {where} on a machine "
        f"with network access, copy it here and pass its path: pretrained=/path/to/open_clip_model.safetensors"
    )


def load_text_encoder(model: str, pretrained: str = "", device: str | torch.device = "cpu") -> TextEncoder:
    """Load an open_clip model as a frozen `TextEncoder`.

    Args:
        model:      an open_clip model name (built-in, or one of stackgan/text/model_configs),
                    or "local-dir:/path" to a folder written by `save_text_encoder`
                    (open_clip_config.json + open_clip_model.safetensors).
        pretrained: for a model name: "" (random init, only useful before training it), a path
                    to a local weights file, or an open_clip tag (downloads; fails offline with
                    instructions).
    """
    open_clip = _open_clip()
    if model.startswith(LOCAL_DIR):
        folder = Path(model[len(LOCAL_DIR) :])
        cfg_file, weights = folder / "open_clip_config.json", folder / "open_clip_model.safetensors"
        missing = [p.name for p in (cfg_file, weights) if not p.is_file()]
        if missing:
            raise TextEncoderError(f"text encoder folder {folder} lacks {', '.join(missing)}; "
                                   "it must hold open_clip_config.json and open_clip_model.safetensors")
        try:
            name = json.loads(cfg_file.read_text(encoding="utf-8")).get("model_name", str(folder))
        except (OSError, ValueError) as e:
            raise TextEncoderError(f"{cfg_file} is not valid JSON: {e}") from None
        try:
            net = open_clip.create_model(LOCAL_DIR + str(folder), device=device)
        except Exception as e:  # safetensors / shape errors from open_clip
            raise TextEncoderError(f"cannot load the text encoder weights {weights}: {e}. "
                                   "The file may be truncated or from another model; re-export it.") from e
        return TextEncoder(net, open_clip.get_tokenizer(LOCAL_DIR + str(folder)), name, folder)

    if model not in open_clip.list_models():
        import difflib

        close = difflib.get_close_matches(model, open_clip.list_models(), n=3)
        raise TextEncoderError(f"unknown open_clip model {model!r}" + (f"; did you mean {', '.join(close)}?" if close else ""))
    if pretrained and not os.path.exists(pretrained) and open_clip.get_pretrained_cfg(model, pretrained) is None:
        if any(sep in pretrained for sep in ("/", "\\", ".")):
            raise TextEncoderError(f"pretrained weights file {pretrained!r} does not exist")
        tags = [t for m, t in open_clip.list_pretrained() if m == model]
        raise TextEncoderError(f"{pretrained!r} is neither a file nor a known tag of {model}; known tags: {tags}")
    try:
        net = open_clip.create_model(model, pretrained=pretrained or None, device=device)
    except RuntimeError as e:
        if pretrained and not os.path.exists(pretrained):
            raise TextEncoderError(_hub_help(model, pretrained)) from e
        raise TextEncoderError(f"cannot load {model} with pretrained={pretrained!r}: {e}") from e
    except Exception as e:
        raise TextEncoderError(f"cannot load {model} weights from {pretrained!r}: {e}. "
                               "The file may be truncated or belong to another model.") from e
    return TextEncoder(net, open_clip.get_tokenizer(model), model)


def save_text_encoder(encoder: TextEncoder, folder: str | Path) -> Path:
    """Write `folder/open_clip_config.json` + `open_clip_model.safetensors` (loads with local-dir:)."""
    from safetensors.torch import save_file

    open_clip = _open_clip()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if encoder.source_dir is not None:
        import shutil

        for fname in ("open_clip_config.json", "open_clip_model.safetensors"):
            if Path(encoder.source_dir).resolve() != folder.resolve():
                shutil.copyfile(Path(encoder.source_dir) / fname, folder / fname)
        return folder
    model_cfg = open_clip.get_model_config(encoder.name)
    if model_cfg is None:  # a local-dir encoder: copy its own config
        raise TextEncoderError(f"no open_clip config for {encoder.name!r}; save it from its original folder")
    cfg = {"model_name": encoder.name, "model_cfg": model_cfg, "preprocess_cfg": {"mean": list(CLIP_MEAN), "std": list(CLIP_STD)}}
    (folder / "open_clip_config.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    state = {k: v.detach().cpu().contiguous() for k, v in encoder.model.state_dict().items()}
    save_file(state, str(folder / "open_clip_model.safetensors"))
    return folder
