"""The app's callbacks as pure functions: raw widget values in, images, scores and messages out.

Nothing here imports gradio. Every function validates its inputs on the server (the widgets'
limits are a convenience, not a guarantee: the HTTP API takes any value) and never raises for
bad input: a refusal comes back as `error`, a repaired value as a line in `notes`.
`app/ui.py` turns `error` into `gr.Error` and `notes` into `gr.Warning` toasts plus a visible
notes line, so these functions are tested without a server or a browser.

Uses only the public pipeline API: `pipe(...)`, `pipe.check_prompts`, `pipe.encode`,
`pipe.stage1` / `pipe.stage2` (interpolation) and `pipe.text_encoder.encode_images`
(the diversity score's feature space).
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass, field
from numbers import Number
from typing import Any

import torch

import stackgan  # noqa: F401  (offline settings first)
from stackgan.pipeline import PipelineError, StackGANPipeline

log = logging.getLogger(__name__)

MAX_SAMPLES = 32
DEFAULT_SAMPLES = 8
MAX_SEED = 2**31 - 1
MAX_CAPTION_CHARS = 1000
MIN_FRAMES, MAX_FRAMES, DEFAULT_FRAMES = 2, 16, 8

STAGE_1 = "Stage I"
STAGE_2 = "Stage II"
STAGE_BOTH = "Both, side by side"
STAGE_CHOICES = [STAGE_1, STAGE_2, STAGE_BOTH]

EXAMPLE_CAPTION = "a small red circle in the top left corner on a white background"


class InputRefused(ValueError):
    """An input that cannot be repaired; the message is shown to the user as is."""


# ---------------------------------------------------------------------------- results
@dataclass
class GenerateResult:
    """What one Generate click produces (images are PIL, at the model's resolution)."""

    images: list[Any] = field(default_factory=list)  # the chosen stage (stage II for "both")
    stage1_images: list[Any] | None = None  # "both": stage I of the same samples
    diversity: float | None = None  # of `images`; None for fewer than 2 samples
    diversity_stage1: float | None = None  # of `stage1_images`
    caption: str = ""
    seed: int | None = None  # the seed actually used (after clamping / drawing)
    num_samples: int = 0
    stage: str = ""  # the stage actually shown (one of STAGE_CHOICES)
    notes: list[str] = field(default_factory=list)  # repaired inputs, truncated captions, ...
    error: str | None = None  # set when nothing was generated
    seconds: float = 0.0  # generation + scoring time


@dataclass
class CompareResult:
    """The same caption and seed through two models (or stage I vs stage II of one model)."""

    left: list[Any] = field(default_factory=list)
    right: list[Any] = field(default_factory=list)
    left_label: str = ""
    right_label: str = ""
    left_diversity: float | None = None
    right_diversity: float | None = None
    seed: int | None = None
    notes: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class InterpolateResult:
    """Frames from seed A to seed B (noise interpolated spherically), with their t values."""

    images: list[Any] = field(default_factory=list)
    ts: list[float] = field(default_factory=list)
    seeds: tuple[int, int] | None = None
    notes: list[str] = field(default_factory=list)
    error: str | None = None


# ---------------------------------------------------------------------------- validation
def parse_caption(caption: Any, notes: list[str]) -> str:
    """Cap the length at MAX_CAPTION_CHARS, collapse whitespace; refuse an empty caption."""
    if caption is None:
        caption = ""
    if not isinstance(caption, str):
        raise InputRefused(f"The caption must be text, got {type(caption).__name__}.")
    if len(caption) > MAX_CAPTION_CHARS:
        notes.append(f"The caption had {len(caption)} characters; only the first {MAX_CAPTION_CHARS} were kept.")
        caption = caption[:MAX_CAPTION_CHARS]
    caption = " ".join(caption.split())
    if not caption:
        raise InputRefused(f"The caption is empty: describe the image, e.g. '{EXAMPLE_CAPTION}'.")
    return caption


def _as_number(value: Any) -> float | int | None:
    """int / float / numeric string -> number; anything else (or NaN, inf) -> None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            try:
                value = float(text)
            except ValueError:
                return None
    if isinstance(value, int):
        return value
    if isinstance(value, Number):
        value = float(value)  # numpy scalars, Decimal, ...
        return value if math.isfinite(value) else None
    return None


def parse_int(value: Any, name: str, lo: int, hi: int, default: int, notes: list[str]) -> int:
    """A whole number in [lo, hi]: rounded and clamped with a note; missing or not a number -> default with a note."""
    x = _as_number(value)
    if x is None:
        notes.append(f"The {name} {value!r} is not a number; used {default}.")
        return default
    n = int(round(x))
    if n != x:
        notes.append(f"The {name} must be a whole number; {x:g} was rounded to {n}.")
    if not lo <= n <= hi:
        clamped = min(max(n, lo), hi)
        notes.append(f"The {name} must be between {lo} and {hi}; {n} was changed to {clamped}.")
        n = clamped
    return n


def parse_seed(value: Any, notes: list[str], name: str = "seed") -> int:
    """A seed in [0, MAX_SEED]. Empty -> a fresh random seed (noted); not a number -> refused;
    fractional -> rounded, out of range -> clamped (noted)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        seed = random_seed()
        notes.append(f"No {name} given; drew {name} {seed}.")
        return seed
    x = _as_number(value)
    if x is None:
        raise InputRefused(f"The {name} must be a whole number between 0 and {MAX_SEED}, got {str(value)[:40]!r}.")
    return parse_int(x, name, 0, MAX_SEED, 0, notes)


def parse_stage(value: Any, pipe: StackGANPipeline, notes: list[str], allow_both: bool = True) -> str:
    """One of STAGE_CHOICES that this model can produce (no stage II -> stage I, noted)."""
    choices = STAGE_CHOICES if allow_both else [STAGE_1, STAGE_2]
    stage = value if value in choices else None
    if stage is None:
        stage = default_stage(pipe)
        notes.append(f"Unknown stage {str(value)[:40]!r}; showing {stage}.")
    if stage != STAGE_1 and pipe.stage2 is None:
        notes.append(f"{pipe.model_id} has no stage II; showing stage I.")
        stage = STAGE_1
    return stage


def default_stage(pipe: StackGANPipeline) -> str:
    return STAGE_2 if pipe.stage2 is not None else STAGE_1


def random_seed() -> int:
    """A fresh seed in [0, MAX_SEED] (for the Randomise button)."""
    return random.SystemRandom().randint(0, MAX_SEED)


def _check_caption(pipe: StackGANPipeline, caption: str, notes: list[str]) -> None:
    """Note a caption that is longer than the text encoder's context (it gets truncated)."""
    _, pipe_notes = pipe.check_prompts([caption])
    for n in pipe_notes:
        notes.append("Caption truncated: " + n.replace("prompt 0 has", "it has", 1)
                     + "; the images follow the beginning of the caption.")


# ---------------------------------------------------------------------------- diversity
def feature_space(pipe: StackGANPipeline) -> str:
    """The named feature space of the diversity score."""
    return f"CLIP image embeddings ({pipe.text_encoder.name} image tower)"


def diversity_explanation(pipe: StackGANPipeline, short: bool = False) -> str:
    """One line on what the diversity score measures (short: for a widget's info line)."""
    if short:
        return (f"Mean pairwise cosine distance of {feature_space(pipe)} over these samples: "
                "0 = identical (mode collapse), higher = more varied (max 2).")
    return (f"Diversity = mean pairwise cosine distance of {feature_space(pipe)} over the samples of one caption: "
            "0 means identical samples (mode collapse), higher means more varied (at most 2).")


def diversity_score(pipe: StackGANPipeline, images: torch.Tensor) -> float | None:
    """Mean over all pairs i < j of 1 - cos(e_i, e_j), e = CLIP image embeddings of uint8 `[N, 3, H, W]`.

    Returns a float in [0, 2] rounded to 4 decimals (identical images give 0), or None when N < 2.
    """
    if images.shape[0] < 2:
        return None
    emb = pipe.text_encoder.encode_images(images).double()  # [N, D], unit norm
    emb = emb / emb.norm(dim=1, keepdim=True).clamp_min(1e-12)
    sim = emb @ emb.T  # [N, N]
    iu = torch.triu_indices(len(emb), len(emb), offset=1)
    d = (1.0 - sim[iu[0], iu[1]]).mean().item()
    return round(min(max(d, 0.0), 2.0), 4)


# ---------------------------------------------------------------------------- callbacks
def _to_pil(images: torch.Tensor) -> list[Any]:
    from PIL import Image

    return [Image.fromarray(a) for a in images.permute(0, 2, 3, 1).contiguous().numpy()]


def generate(pipe: StackGANPipeline, caption: Any, num_samples: Any = DEFAULT_SAMPLES, seed: Any = 0,
             stage: Any = STAGE_2) -> GenerateResult:
    """The Generate tab: `num_samples` images of one caption, and their diversity score(s)."""
    notes: list[str] = []
    t0 = time.perf_counter()
    try:
        caption = parse_caption(caption, notes)
        n = parse_int(num_samples, "number of samples", 1, MAX_SAMPLES, DEFAULT_SAMPLES, notes)
        seed = parse_seed(seed, notes)
        stage = parse_stage(stage, pipe, notes)
        _check_caption(pipe, caption, notes)
        out = pipe([caption], num_images_per_prompt=n, seed=seed, stage=1 if stage == STAGE_1 else 2, output_type="pt")
    except (InputRefused, PipelineError) as e:
        return GenerateResult(notes=notes, error=str(e))
    res = GenerateResult(images=_to_pil(out.images), caption=caption, seed=seed, num_samples=n, stage=stage, notes=notes)
    res.diversity = diversity_score(pipe, out.images)
    if stage == STAGE_BOTH and out.stage1_images is not None:
        res.stage1_images = _to_pil(out.stage1_images)
        res.diversity_stage1 = diversity_score(pipe, out.stage1_images)
    if n < 2:
        notes.append("The diversity score needs at least 2 samples.")
    res.seconds = time.perf_counter() - t0
    return res


def compare(pipe: StackGANPipeline, other: StackGANPipeline | None, caption: Any, num_samples: Any = DEFAULT_SAMPLES,
            seed: Any = 0) -> CompareResult:
    """The Compare tab: the same caption and seed through `pipe` and `other` (each at its highest stage).

    Without `other`: stage I vs stage II of the same samples of `pipe`.
    """
    notes: list[str] = []
    try:
        caption = parse_caption(caption, notes)
        n = parse_int(num_samples, "number of samples", 1, MAX_SAMPLES, DEFAULT_SAMPLES, notes)
        seed = parse_seed(seed, notes)
        _check_caption(pipe, caption, notes)
        labels = compare_labels(pipe, other)
        if other is None:
            if pipe.stage2 is None:
                raise InputRefused(f"{pipe.model_id} has no stage II and no second model is loaded: nothing to compare. "
                                   "Start the app with --compare-model PATH.")
            out = pipe([caption], num_images_per_prompt=n, seed=seed, stage=2, output_type="pt")
            left, right = out.stage1_images, out.images
        else:
            if other is not pipe:
                _check_caption(other, caption, [])
            a = pipe([caption], num_images_per_prompt=n, seed=seed, stage=2, output_type="pt")
            b = other([caption], num_images_per_prompt=n, seed=seed, stage=2, output_type="pt")
            left, right = a.images, b.images
            if (pipe.stage1.z_dim, pipe.stage1.cond_dim) != (other.stage1.z_dim, other.stage1.cond_dim):
                notes.append("The two models draw noise of different sizes, so the same seed does not give "
                             "corresponding samples; compare the sets, not image by image.")
    except (InputRefused, PipelineError) as e:
        return CompareResult(notes=notes, error=str(e))
    if n < 2:
        notes.append("The diversity score needs at least 2 samples.")
    return CompareResult(left=_to_pil(left), right=_to_pil(right), left_label=labels[0], right_label=labels[1],
                         left_diversity=diversity_score(pipe, left), right_diversity=diversity_score(other or pipe, right),
                         seed=seed, notes=notes)


def compare_labels(pipe: StackGANPipeline, other: StackGANPipeline | None) -> tuple[str, str]:
    """Names of the two sides of the Compare tab."""
    if other is None:
        return (f"{pipe.model_id}: stage I ({pipe.stage1.resolution} px)", f"{pipe.model_id}: stage II ({pipe.resolution} px)")
    name_a, name_b = pipe.model_id, other.model_id
    if name_a == name_b:
        name_a, name_b = f"A: {name_a}", f"B: {name_b}"
    return f"{name_a} ({pipe.resolution} px)", f"{name_b} ({other.resolution} px)"


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation between rows of a and b `[N, K]` (linear where they are parallel)."""
    a64, b64 = a.double(), b.double()
    cos = (a64 * b64).sum(-1, keepdim=True) / (a64.norm(dim=-1, keepdim=True) * b64.norm(dim=-1, keepdim=True)).clamp_min(1e-12)
    omega = cos.clamp(-1.0, 1.0).acos()
    so = omega.sin()
    lin = (1 - t) * a64 + t * b64
    sph = (torch.sin((1 - t) * omega) * a64 + torch.sin(t * omega) * b64) / so.clamp_min(1e-12)
    return torch.where(so.abs() < 1e-6, lin, sph).to(a.dtype)


def _seed_noise(pipe: StackGANPipeline, seed: int, with_stage2: bool) -> list[torch.Tensor]:
    # Drawn in the order the pipeline draws them for a one-image call (z, stage I eps, stage II eps),
    # so the end frames are what Generate gives with that seed and 1 sample.
    g = torch.Generator("cpu")
    g.manual_seed(seed)
    noise = [torch.randn(1, pipe.stage1.z_dim, generator=g), torch.randn(1, pipe.stage1.cond_dim, generator=g)]
    if with_stage2:
        noise.append(torch.randn(1, pipe.stage2.cond_dim, generator=g))
    return noise


def interpolate(pipe: StackGANPipeline, caption: Any, seed_a: Any = 0, seed_b: Any = 1, frames: Any = DEFAULT_FRAMES,
                stage: Any = STAGE_2) -> InterpolateResult:
    """The Interpolate tab: `frames` images of one caption from seed A to seed B.

    The noise z and the conditioning-augmentation noise of the two seeds are interpolated
    spherically (t = 0 ... 1); the text embedding stays fixed. The first and last frames are
    the images Generate gives with seed A and seed B and 1 sample.
    """
    notes: list[str] = []
    try:
        caption = parse_caption(caption, notes)
        sa = parse_seed(seed_a, notes, "seed A")
        sb = parse_seed(seed_b, notes, "seed B")
        k = parse_int(frames, "number of frames", MIN_FRAMES, MAX_FRAMES, DEFAULT_FRAMES, notes)
        stage = parse_stage(stage, pipe, notes, allow_both=False)
        _check_caption(pipe, caption, notes)
    except (InputRefused, PipelineError) as e:
        return InterpolateResult(notes=notes, error=str(e))
    if sa == sb:
        notes.append("Seed A and seed B are the same, so every frame is the same image.")
    use2 = stage == STAGE_2
    na, nb = _seed_noise(pipe, sa, use2), _seed_noise(pipe, sb, use2)
    ts = [i / (k - 1) for i in range(k)]
    noise = [torch.cat([slerp(a, b, t) for t in ts]) for a, b in zip(na, nb)]  # each [k, dim]
    dev = pipe.device
    with torch.inference_mode():
        text = pipe.encode([caption]).expand(k, -1)  # [k, D]
        img, _, _ = pipe.stage1(text, noise[0].to(dev), noise[1].to(dev))
        if use2:
            img, _, _ = pipe.stage2(img, text, noise[2].to(dev))
    from stackgan.data.base import to_uint8

    return InterpolateResult(images=_to_pil(to_uint8(img.cpu())), ts=ts, seeds=(sa, sb), notes=notes)


# ---------------------------------------------------------------------------- text for the page
def model_summary(pipe: StackGANPipeline) -> str:
    """One line: model id, resolutions, text encoder."""
    res = f"{pipe.stage1.resolution} px stage I"
    if pipe.stage2 is not None:
        res += f" → {pipe.resolution} px stage II"
    line = f"Model **{pipe.model_id}**: {res}; text encoder `{pipe.text_encoder.name}`."
    if pipe.candidates > 1:
        line += (f" Each sample is picked from {pipe.candidates} candidates: the ones the text encoder's image tower "
                 "matches best with the caption, passing over near-copies (Generate and Compare tabs).")
    return line


def trained_on_note(pipe: StackGANPipeline) -> str:
    """One line on the training data (from the pipeline's info), with a hint on what to ask for."""
    data = pipe.info.get("trained_on")
    if not data:
        return "The training data of this model is not recorded; captions unlike its training captions give poor images."
    line = f"Trained on **{data}**"
    if str(data).startswith("shapes"):
        line += (" (the built-in synthetic data set: one shape per image, with colour, size, position and background)")
    return line + ": it only knows what its training captions describe."


def example_prompts(pipe: StackGANPipeline) -> list[str]:
    ex = [p for p in pipe.info.get("example_prompts", []) if isinstance(p, str) and p.strip()]
    return ex[:12] or [EXAMPLE_CAPTION]
