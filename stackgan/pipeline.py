"""`StackGANPipeline`: captions in, images out, from a self-describing folder.

    pipe = StackGANPipeline.from_pretrained()            # the bundled shapes model
    out = pipe(["a red circle in the top left"], num_images_per_prompt=8, seed=0)
    out.images[0].save("sample.png")

A pipeline folder holds a `config.json` beside `model.safetensors` per component and a
`model_index.json`; nothing is pickled. The text encoder's identity (model, weights hash,
dim) is stored with each generator and checked when the folder is loaded.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import env  # noqa: F401
from .data.base import to_uint8
from .models.stage1 import Stage1Generator
from .models.stage2 import Stage2Generator
from .text.encoder import TextEncoder, load_text_encoder, save_text_encoder

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
DEFAULT_MODEL_DIR = Path(__file__).parent / "assets" / "default"
PRECISIONS = ("fp32", "bf16", "bf16-stage2", "auto")  # StackGANPipeline.optimize
MAX_IMAGES_PER_PROMPT = 256
MAX_CANDIDATES = 16  # candidates per returned image (pipeline argument `candidates`)


class PipelineError(ValueError):
    """A pipeline folder or a call's arguments are wrong; the message says how to fix it."""


@dataclass
class StackGANOutput:
    images: list[Any]  # per prompt, num_images_per_prompt images, flattened in prompt order
    stage1_images: list[Any] | None
    prompts: list[str]
    notes: list[str] = field(default_factory=list)  # e.g. captions truncated to the encoder's context


GENERATORS = {"Stage1Generator": Stage1Generator, "Stage2Generator": Stage2Generator}
# Upper bounds of the constructor arguments read from a component's config.json: a damaged or
# hostile file must not make the constructor build 10^9 residual blocks before the weights are checked.
ARG_LIMITS = {"res_blocks": 256, "resolution": 8192, "res_in": 8192}
MAX_ARG = 2**16
BIG_ARG = 1024  # any argument above this: shapes are checked before the model is allocated


def generator_config(g: torch.nn.Module) -> dict[str, Any]:
    if isinstance(g, Stage1Generator):
        args = {"text_dim": g.text_dim, "z_dim": g.z_dim, "cond_dim": g.cond_dim, "gf": g.ch0 // 8, "resolution": g.resolution}
    else:
        args = {"text_dim": g.text_dim, "cond_dim": g.cond_dim, "gf": g.encoder[0].out_channels,
                "res_blocks": len(g.res), "res_in": g.res_in, "resolution": g.resolution}
    if g.film is not None:  # written only when on, so models without it keep their config.json
        args["film"] = 1
    if getattr(g, "skip", False):  # the same: stage II's enlarged-stage-I skip (model.g2_skip)
        args["skip"] = 1
    return {"class": type(g).__name__, "args": args}


def save_component(module: torch.nn.Module, folder: Path, extra: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    cfg = {**generator_config(module), **extra}
    (folder / "config.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"))


def load_component(folder: Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Build a generator from `folder/config.json` and load `folder/model.safetensors` strictly."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    cfg_path, weights = folder / "config.json", folder / "model.safetensors"
    for p in (cfg_path, weights):
        if not p.is_file():
            raise PipelineError(f"{p} is missing: a pipeline component needs config.json and model.safetensors")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        cls = GENERATORS[cfg["class"]]
        args = dict(cfg["args"])
    except (ValueError, KeyError, TypeError) as e:
        raise PipelineError(f"{cfg_path} is not a valid component config ({e!r}); expected class and args") from None
    if not all(type(v) is int and 0 <= v <= ARG_LIMITS.get(k, MAX_ARG) for k, v in args.items()):
        raise PipelineError(f"{cfg_path}: the args must be whole numbers in [0, {MAX_ARG}] "
                            f"(res_blocks <= {ARG_LIMITS['res_blocks']}, resolutions <= {ARG_LIMITS['resolution']}), got {args}")
    # A config.json that declares a big model is first built on the meta device (nothing allocated)
    # and compared with the weights; not always, because the first meta build imports torch._dynamo (~2 s).
    big = max(args.values(), default=0) > BIG_ARG
    try:
        with torch.device("meta") if big else contextlib.nullcontext():
            module = cls(**args)
    except (TypeError, ValueError, RuntimeError, AttributeError, OverflowError) as e:
        raise PipelineError(f"{cfg_path}: cannot build {cfg['class']} from {args}: {e}") from None
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, RuntimeError) as e:
        raise PipelineError(f"{weights} cannot be read ({e}); the file is truncated or corrupt: re-export or re-download it") from None
    if big:
        load_state_strict(module, state, weights, check_only=True)
        module = cls(**args)
    load_state_strict(module, state, weights)
    return module.eval().requires_grad_(False), cfg


def load_state_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], source: Any, check_only: bool = False) -> None:
    """load_state_dict(strict=True) with an error that names the file and the keys (check_only: compare, don't load)."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = []
        for label, keys in (("missing keys", missing), ("unexpected keys", unexpected)):
            if keys:
                parts.append(f"{label}: {', '.join(keys[:5])}" + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else ""))
        if wrong:
            parts.append("wrong shapes: " + ", ".join(f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in wrong[:5]))
        raise PipelineError(f"{source} does not match the model: " + "; ".join(parts))
    if not check_only:
        module.load_state_dict(state, strict=True)


class StackGANPipeline:
    """Text encoder + stage I generator (+ stage II generator).

    Args:
        text_encoder: a frozen `TextEncoder`.
        stage1:       `Stage1Generator` whose text_dim equals the encoder's dim.
        stage2:       optional `Stage2Generator` taking stage1's images.
        info:         free-form facts saved in model_index.json (training data, config, ...).
    """

    def __init__(self, text_encoder: TextEncoder, stage1: Stage1Generator, stage2: Stage2Generator | None = None,
                 info: dict[str, Any] | None = None):
        if stage1.text_dim != text_encoder.dim:
            raise PipelineError(f"stage I expects {stage1.text_dim}-d text embeddings but the text encoder "
                                f"{text_encoder.name} gives {text_encoder.dim}-d ones")
        if stage2 is not None:
            if stage2.text_dim != text_encoder.dim:
                raise PipelineError(f"stage II expects {stage2.text_dim}-d text embeddings, the encoder gives {text_encoder.dim}-d")
            if stage2.res_in != stage1.resolution:
                raise PipelineError(f"stage II takes {stage2.res_in}px images but stage I makes {stage1.resolution}px")
        self.text_encoder, self.stage1, self.stage2 = text_encoder, stage1.eval(), stage2.eval() if stage2 else None
        self.info = dict(info or {})
        self.source: str = self.info.get("source", "")
        self._emb_cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._fast: tuple[torch.nn.Module, torch.nn.Module | None] | None = None
        self.precision = "fp32"
        self.candidates, self.diversity = 1, 0.5  # defaults of __call__'s candidate sampling (set_sampling)
        self.recommended_sampling = self._declared_sampling()

    def _declared_sampling(self) -> dict[str, Any] | None:
        """info["sampling"] (model_index.json): the candidate sampling the model is meant to be served
        with, which `stackgan generate`, `stackgan eval` and the app use unless told otherwise (`pipe(...)`
        itself samples plainly until `set_sampling`). None when the model declares none."""
        declared = self.info.get("sampling")
        if declared is None:
            return None
        where = f"{Path(self.source) / 'model_index.json' if self.source else 'the pipeline info'}: info.sampling"
        if not isinstance(declared, dict) or set(declared) != {"candidates", "diversity"}:
            raise PipelineError(f"{where} must be {{\"candidates\": N, \"diversity\": D}}, got {declared!r}; "
                                "fix it or remove it (plain sampling)")
        try:
            self._check_sampling(declared["candidates"], declared["diversity"])
        except PipelineError as e:
            raise PipelineError(f"{where}: {e}; fix it or remove it (plain sampling)") from None
        return {"candidates": declared["candidates"], "diversity": float(declared["diversity"])}

    def set_sampling(self, candidates: int = 1, diversity: float = 0.5) -> "StackGANPipeline":
        """Defaults for calls that do not pass `candidates` / `diversity` (see `__call__`); returns self.
        Checked at once: a bad value or an encoder without an image tower raises PipelineError."""
        self._check_sampling(candidates, diversity)
        self.candidates, self.diversity = candidates, float(diversity)
        return self

    def _check_sampling(self, candidates: Any, diversity: Any) -> None:
        if not isinstance(candidates, int) or not 1 <= candidates <= MAX_CANDIDATES:
            raise PipelineError(f"candidates must be an integer in [1, {MAX_CANDIDATES}], got {candidates!r}")
        if isinstance(diversity, bool) or not isinstance(diversity, (int, float)) or not 0 <= diversity <= 4:
            raise PipelineError(f"diversity must be a number in [0, 4], got {diversity!r}")
        if candidates > 1 and not self.text_encoder.has_image_tower:
            raise PipelineError(f"candidates > 1 needs a text encoder with an image tower to rank them; "
                                f"{self.model_id}'s has none: use candidates=1")

    def optimize(self, precision: str = "auto", fold_bn: bool = True, channels_last: bool = True,
                 compile: bool = False, deconv: bool = True) -> "StackGANPipeline":
        """Use faster inference copies of the generators (the saved weights are untouched).

        Args:
            precision:     "fp32"; "bf16" (both stages under bf16 autocast, convolution weights
                           stored in bf16); "bf16-stage2" (stage I in float32, stage II in bf16);
                           or "auto": "bf16-stage2" where the hardware has native bf16 units, else
                           "fp32". Stage I decides what is drawn where and costs a quarter of the
                           bundled model's FLOPs: in bf16 it changes what the shapes probe reads
                           on 2.1 % of the bundled model's samples, in float32 on 0.2 % (README,
                           "Performance").
            fold_bn:       fold batch norm into the convolutions.
            channels_last: channels_last memory format for the convolutions.
            compile:       `torch.compile` the generators (the first call of each batch shape
                           compiles, seconds to a minute); a failure to compile falls back to
                           eager with a warning.
            deconv:        compute each nearest x2 upsampling + 3x3 convolution as one 4x4
                           stride-2 transposed convolution (`stackgan.optimize.UpsampleConv`).
        Returns self; `pipe.optimize(precision="fp32", fold_bn=False, channels_last=False, deconv=False)`
        is the plain path.
        """
        from .optimize import CompiledOrEager, bf16_available, optimize_generator

        if precision not in PRECISIONS:
            raise PipelineError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
        if precision == "auto":
            precision = "bf16-stage2" if bf16_available(self.device) else "fp32"
        self.precision = precision
        mods = []
        for g, bf16 in zip((self.stage1, self.stage2), self._bf16_stages):
            if g is None:
                mods.append(None)
                continue
            g = optimize_generator(g, fold_bn=fold_bn, deconv=deconv, channels_last=channels_last, bf16_weights=bf16)
            mods.append(CompiledOrEager(g) if compile else g)
        self._fast = (mods[0], mods[1]) if (fold_bn or channels_last or compile or deconv or precision != "fp32") else None
        return self

    @property
    def _bf16_stages(self) -> tuple[bool, bool]:
        """Whether stage I and stage II run under bf16 autocast."""
        return self.precision == "bf16", self.precision in ("bf16", "bf16-stage2")

    # ---------------------------------------------------------------- I/O
    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, device: str | torch.device = "cpu") -> "StackGANPipeline":
        """Load a pipeline folder (None or "default": the bundled shapes model)."""
        folder = DEFAULT_MODEL_DIR if path in (None, "", "default") else Path(path)
        if not folder.is_dir():
            raise PipelineError(f"model folder {folder} does not exist; pass a folder written by save_pretrained "
                                "or by training (RUN_DIR/pipeline)")
        index_path = folder / "model_index.json"
        if not index_path.is_file():
            raise PipelineError(f"{folder} has no model_index.json: it is not a stackgan pipeline folder")
        try:
            index = json.loads(index_path.read_text(encoding="utf-8"))
        except ValueError as e:
            raise PipelineError(f"{index_path} is not valid JSON: {e}") from None
        if not isinstance(index, dict) or index.get("format") != FORMAT_VERSION:
            found = index.get("format") if isinstance(index, dict) else f"{type(index).__name__} instead of an object"
            raise PipelineError(f"{index_path}: unsupported pipeline format {found!r} (expected {FORMAT_VERSION})")
        enc_dir = folder / "text_encoder"
        if (enc_dir / "open_clip_config.json").exists():
            encoder = load_text_encoder("local-dir:" + str(enc_dir), device=device)
        elif (enc_dir / "config.json").exists():  # a reference to an open_clip model and local weights
            ref = json.loads((enc_dir / "config.json").read_text(encoding="utf-8"))
            encoder = load_text_encoder(ref["model"], ref.get("pretrained", ""), device=device)
        else:
            raise PipelineError(f"{enc_dir} is missing: a pipeline needs its text encoder "
                                "(open_clip_config.json + open_clip_model.safetensors)")
        stage1, cfg1 = load_component(folder / "stage1")
        stage2 = None
        if (folder / "stage2").exists():
            stage2, _ = load_component(folder / "stage2")
        want = cfg1.get("text_encoder", {})
        if want and not isinstance(want, dict):
            raise PipelineError(f"{folder / 'stage1' / 'config.json'}: text_encoder must be the encoder identity "
                                f"(model, weights_sha256, dim), got {want!r}")
        got = encoder.identity
        if want and (want.get("weights_sha256") != got.weights_sha256 or want.get("dim") != got.dim):
            raise PipelineError(
                f"the text encoder in {enc_dir} ({got.short()}) is not the one the generator was trained with "
                f"({want.get('model')}@{str(want.get('weights_sha256'))[:12]}); restore the original text_encoder folder"
            )
        info = dict(index["info"]) if isinstance(index.get("info"), dict) else {}
        info["source"] = str(folder)
        pipe = cls(encoder, stage1.to(device), stage2.to(device) if stage2 is not None else None, info)
        return pipe

    def save_pretrained(self, path: str | Path) -> Path:
        """Write the folder: model_index.json, text_encoder/, stage1/, stage2/ (atomically replaced)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        save_text_encoder(self.text_encoder, tmp / "text_encoder")
        ident = {"text_encoder": self.text_encoder.identity.to_dict()}
        save_component(self.stage1, tmp / "stage1", ident)
        if self.stage2 is not None:
            save_component(self.stage2, tmp / "stage2", ident)
        info = {k: v for k, v in self.info.items() if k != "source"}
        index = {"_class_name": "StackGANPipeline", "format": FORMAT_VERSION,
                 "components": ["text_encoder", "stage1"] + (["stage2"] if self.stage2 is not None else []), "info": info}
        (tmp / "model_index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
        return path

    # ---------------------------------------------------------------- generation
    @property
    def device(self) -> torch.device:
        return next(self.stage1.parameters()).device

    @property
    def resolution(self) -> int:
        return (self.stage2 or self.stage1).resolution

    @property
    def model_id(self) -> str:
        return self.info.get("model_id") or Path(self.source or "unsaved").name

    def encode(self, prompts: list[str]) -> torch.Tensor:
        """Text embeddings `[N, D]`, with a small in-memory cache (the app repeats prompts)."""
        missing = [p for p in dict.fromkeys(prompts) if p not in self._emb_cache]
        if missing:
            for p, e in zip(missing, self.text_encoder.encode(missing)):
                self._emb_cache[p] = e
        for p in prompts:
            self._emb_cache.move_to_end(p)
        while len(self._emb_cache) > 4096:
            self._emb_cache.popitem(last=False)
        return torch.stack([self._emb_cache[p] for p in prompts]).to(self.device)

    def check_prompts(self, prompts: str | list[str]) -> tuple[list[str], list[str]]:
        """Normalise prompts; returns (prompts, notes). Empty prompts raise PipelineError."""
        if isinstance(prompts, str):
            prompts = [prompts]
        if not isinstance(prompts, (list, tuple)) or not prompts:
            raise PipelineError("prompts must be a caption or a non-empty list of captions")
        out, notes = [], []
        for k, p in enumerate(prompts):
            if not isinstance(p, str):
                raise PipelineError(f"prompt {k} is {type(p).__name__}, not a string")
            p = " ".join(p.split())
            if not p:
                raise PipelineError(f"prompt {k} is empty; describe the image, e.g. 'a red circle on a white background'")
            n = self.text_encoder.token_count(p)
            if n > self.text_encoder.context_length:
                notes.append(f"prompt {k} has {n} tokens; only the first {self.text_encoder.context_length} are used")
            out.append(p)
        return out, notes

    @torch.inference_mode()
    def __call__(
        self,
        prompts: str | list[str],
        num_images_per_prompt: int = 8,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        stage: int = 2,
        output_type: str = "pil",
        noise_scale: float = 1.0,
        truncation: float | None = None,
        batch_size: int = 64,
        candidates: int | None = None,
        diversity: float | None = None,
    ) -> StackGANOutput:
        """Generate `num_images_per_prompt` images for each prompt.

        Args:
            prompts:      a caption or a list of captions.
            seed / generator: the same seed gives the same images on the same machine
                          (a fresh random seed when both are None).
            stage:        1 (low resolution) or 2 (refined; falls back to 1 without a stage II).
            output_type:  "pil" (list of PIL images), "np" (uint8 `[N, H, W, 3]`), "pt" (uint8 `[N, 3, H, W]`).
            noise_scale:  multiplies z and the conditioning noise; < 1 gives safer, less varied samples.
            truncation:   resample |z_i| above this (the truncation trick); None = off.
            candidates:   draw this many candidates per returned image and keep those that the
                          text encoder's image tower matches best with the caption, passing over
                          candidates too close to ones already kept (`select_candidates`);
                          1 = off. Costs `candidates` times the generation. None: the
                          pipeline's default (`set_sampling`; 1 unless changed).
            diversity:    with candidates > 1: how much closeness to a kept image counts against
                          a candidate (0: the best matches only). None: the pipeline's default (0.5).
        """
        candidates = self.candidates if candidates is None else candidates
        diversity = self.diversity if diversity is None else diversity
        prompts, notes = self.check_prompts(prompts)
        if not isinstance(num_images_per_prompt, int) or not 1 <= num_images_per_prompt <= MAX_IMAGES_PER_PROMPT:
            raise PipelineError(f"num_images_per_prompt must be an integer in [1, {MAX_IMAGES_PER_PROMPT}], got {num_images_per_prompt!r}")
        if stage not in (1, 2):
            raise PipelineError(f"stage must be 1 or 2, got {stage!r}")
        if output_type not in ("pil", "np", "pt"):
            raise PipelineError(f"output_type must be 'pil', 'np' or 'pt', got {output_type!r}")
        if not 0 <= noise_scale <= 4:
            raise PipelineError(f"noise_scale must be in [0, 4], got {noise_scale}")
        if truncation is not None and truncation <= 0:
            raise PipelineError(f"truncation must be > 0 or None, got {truncation}")
        self._check_sampling(candidates, diversity)
        if generator is None:
            generator = torch.Generator("cpu")
            generator.manual_seed(int(seed) if seed is not None else int(torch.seed() % 2**63))
        per_prompt = num_images_per_prompt * candidates
        captions = self.encode(prompts)
        text = captions.repeat_interleave(per_prompt, dim=0)
        n = text.shape[0]
        g1, g2 = self._fast if self._fast is not None else (self.stage1, self.stage2)
        g2 = g2 if stage == 2 else None
        z = torch.randn(n, g1.z_dim, generator=generator)
        if truncation is not None:
            for _ in range(100):  # resample outliers (the truncation trick)
                bad = z.abs() > truncation
                if not bad.any():
                    break
                z[bad] = torch.randn(int(bad.sum()), generator=generator)
            z = z.clamp(-truncation, truncation)
        eps1 = torch.randn(n, g1.cond_dim, generator=generator)
        eps2 = torch.randn(n, g2.cond_dim, generator=generator) if g2 is not None else None
        lows, highs = [], []
        dev = self.device
        amp1, amp2 = (torch.autocast(dev.type, dtype=torch.bfloat16, enabled=on) for on in self._bf16_stages)
        for i in range(0, n, batch_size):
            sl = slice(i, i + batch_size)
            with amp1:
                low, _, _ = g1(text[sl], (z[sl] * noise_scale).to(dev), eps1[sl].to(dev), noise_scale)
            lows.append(low.float())
            if g2 is not None:
                with amp2:
                    highs.append(g2(low, text[sl], eps2[sl].to(dev), noise_scale)[0].float())
        low = to_uint8(torch.cat(lows).cpu())
        high = to_uint8(torch.cat(highs).cpu()) if highs else None
        if candidates > 1:
            final = high if high is not None else low
            emb = torch.cat([self.text_encoder.encode_images(x) for x in torch.split(final, 256)])
            caption = captions.float().cpu()
            keep = torch.cat([k * per_prompt + select_candidates(
                emb[k * per_prompt:(k + 1) * per_prompt] @ caption[k], emb[k * per_prompt:(k + 1) * per_prompt],
                num_images_per_prompt, diversity) for k in range(len(prompts))])  # fmt: skip
            low, high = low[keep], high[keep] if high is not None else None
        return StackGANOutput(
            images=_convert(high if high is not None else low, output_type),
            stage1_images=_convert(low, output_type) if high is not None else None,
            prompts=prompts,
            notes=notes,
        )


def select_candidates(match: torch.Tensor, emb: torch.Tensor, k: int, diversity: float = 0.5) -> torch.Tensor:
    """Indices of `k` of the candidates, best first, by maximal marginal relevance (Carbonell and
    Goldstein 1998): each pick maximises match_i - diversity * max over kept j of cos(emb_i, emb_j).

    match `[M]`: each candidate's cosine with the caption; emb `[M, D]`: unit-norm image
    embeddings. diversity 0 keeps the k best matches; larger values trade match for variety.
    """
    m = match.shape[0]
    if not 1 <= k <= m:
        raise ValueError(f"cannot keep {k} of {m} candidates")
    chosen: list[int] = []
    closest = torch.full((m,), -1.0)  # cosine with the nearest kept image; -1 before any is kept
    taken = torch.zeros(m, dtype=torch.bool)
    for _ in range(k):
        score = (match - diversity * closest).masked_fill(taken, float("-inf"))
        i = int(score.argmax())
        chosen.append(i)
        taken[i] = True
        closest = torch.maximum(closest, emb @ emb[i])
    return torch.tensor(chosen)


def _convert(images: torch.Tensor, output_type: str):
    if output_type == "pt":
        return images
    arr = images.permute(0, 2, 3, 1).contiguous().numpy()
    if output_type == "np":
        return arr
    from PIL import Image

    return [Image.fromarray(a) for a in arr]
