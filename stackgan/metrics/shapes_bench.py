"""The shapes benchmark: faithfulness, per-prompt diversity and probe-FID, with a real-image ceiling.

A fixed, versioned prompt set (`prompts_v1.json`, built by `build_prompt_set` from the data
set's own caption templates) names 1-5 attributes per prompt. For every prompt the model
draws K samples; the probe (`probe.py`) reads all five attributes back from each.

- faithfulness: share of (sample, named attribute) pairs the probe reads back as named;
  also the share of samples with every named attribute right.
- diversity: for each attribute a prompt does not name, with S the probe's values on the K
  samples and R its values on K real images matching the prompt (draw A):
  coverage = min(1, |distinct S| / |distinct R|) (values beyond the real spread earn nothing,
  so excess on one prompt cannot hide collapse on another; the uncapped mean is kept too),
  entropy = H(S) / log(number of values of the attribute), recall = |S & R| / |R|;
  averaged over all (prompt, unnamed attribute) pairs, and per attribute.
- probe_fid: torchmetrics FrechetInceptionDistance with the probe's penultimate features,
  samples vs draw A. Not comparable with Inception FID.

The ceiling row runs a second, independent draw (B) of K real images per prompt through the
same code (against draw A where a reference is needed). Real images matching a prompt come
from `ShapesDataset(real_pool_size, "test").matching(...)`; where the pool holds fewer than
2K matches (prompts naming 4-5 attributes), the rest are rendered from the same generative
process with the named attributes fixed (`sample_attributes(rng, fixed=...)`), which is the
exact conditional distribution of the data set; the counts are recorded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.shapes import ATTRIBUTES, ShapesDataset, make_caption, render, sample_attributes
from . import EvalContext, MetricError, register
from .probe import PROBE_VERSION, ProbeFeatures, ShapesProbe, load_probe, resize_mode_for

log = logging.getLogger(__name__)

PROMPT_SET_VERSION = "shapes-prompts-v1"
PROMPTS_PATH = Path(__file__).with_name("prompts_v1.json")
PROMPT_SET_SIZE = 240
PROMPT_SET_SEED = 2017
PROBE_FID_LABEL = "probe-FID (not comparable with Inception FID)"


# ---------------------------------------------------------------------------------------------- prompt set
def build_prompt_set(n: int = PROMPT_SET_SIZE, seed: int = PROMPT_SET_SEED) -> dict[str, Any]:
    """The versioned prompt set, deterministically: prompt k names 1 + (k mod 5) attributes.

    Each prompt comes from `shapes.make_caption` (the data set's own templates and synonyms)
    with a random subset of attributes mentioned; duplicates are redrawn.
    """
    rng = random.Random(seed)
    names = list(ATTRIBUTES)
    prompts: list[dict[str, Any]] = []
    seen: set[str] = set()
    while len(prompts) < n:
        count = 1 + len(prompts) % 5
        chosen = set(rng.sample(names, count))
        attrs = sample_attributes(rng).named()
        text = make_caption(rng, attrs, {k: k in chosen for k in names})
        if text in seen:
            continue
        seen.add(text)
        prompts.append({"id": len(prompts), "prompt": text, "attributes": {k: attrs[k] for k in names if k in chosen}})
    return {
        "version": PROMPT_SET_VERSION,
        "built_by": f"stackgan.metrics.shapes_bench.build_prompt_set(n={n}, seed={seed})",
        "description": "shapes captions naming 1-5 attributes (equally often); 'attributes' holds the named ones",
        "num_prompts": n,
        "prompts": prompts,
    }


def prompt_set_text(data: dict[str, Any]) -> str:
    """The JSON text of a prompt set, one prompt per line (readable diffs)."""
    head = {k: v for k, v in data.items() if k != "prompts"}
    lines = [json.dumps(e, ensure_ascii=False) for e in data["prompts"]]
    return (json.dumps(head, indent=1, ensure_ascii=False)[:-2] + ',\n "prompts": [\n  ' + ",\n  ".join(lines) + "\n ]\n}\n")


def write_prompt_set(path: str | Path = PROMPTS_PATH) -> Path:
    """(Re)write the packaged prompt set; `python -c "from stackgan.metrics.shapes_bench import write_prompt_set; write_prompt_set()"`."""
    path = Path(path)
    path.write_text(prompt_set_text(build_prompt_set()), encoding="utf-8")
    return path


def load_prompt_set(path: str | Path | None = None, num_prompts: int | None = None) -> dict[str, Any]:
    """Read and check a prompt-set JSON -> {"version", "path", "sha256", "total", "prompts": first N entries}."""
    path = Path(path) if path else PROMPTS_PATH
    if not path.is_file():
        raise MetricError(f"prompt set {path} does not exist")
    raw = path.read_bytes()
    try:
        data = json.loads(raw.decode("utf-8"))
        entries = data["prompts"]
    except (ValueError, KeyError, TypeError) as e:
        raise MetricError(f"{path} is not a prompt-set JSON ({e!r}); expected {{'version', 'prompts': [...]}}") from None
    for e in entries:
        attrs = e.get("attributes") if isinstance(e, dict) else None
        if not isinstance(attrs, dict) or not str(e.get("prompt", "")).strip():
            raise MetricError(f"{path}: entry {e!r} needs a non-empty 'prompt' and an 'attributes' dict")
        for k, v in attrs.items():
            if k not in ATTRIBUTES or v not in ATTRIBUTES[k]:
                raise MetricError(f"{path}: prompt {e.get('id')} names {k}={v!r}, which the shapes data set does not have")
    if num_prompts is not None:
        if num_prompts > len(entries):
            raise MetricError(f"num_prompts={num_prompts} but {path} has only {len(entries)} prompts")
        entries = entries[:num_prompts]
    return {"version": data.get("version", "unversioned"), "path": str(path), "sha256": hashlib.sha256(raw).hexdigest(),
            "total": len(data["prompts"]), "prompts": entries}


# ---------------------------------------------------------------------------------------------- shared material
def prompt_set(ctx: EvalContext) -> dict[str, Any]:
    return ctx.cached("prompt set", lambda: load_prompt_set(ctx.options.prompt_set, ctx.options.num_prompts))


def probe_of(ctx: EvalContext) -> tuple[ShapesProbe, dict[str, Any]]:
    return ctx.cached("probe", lambda: load_probe(ctx.options.probe_dir))


def generated(ctx: EvalContext) -> torch.Tensor:
    """K samples per prompt, uint8 `[P * K, 3, R, R]`, prompt-major. Call c uses seed + c."""

    def make() -> torch.Tensor:
        opts, entries = ctx.options, prompt_set(ctx)["prompts"]
        k, r, step = opts.samples_per_prompt, ctx.resolution, opts.prompts_per_call
        texts = [e["prompt"] for e in entries]
        # plain sampling passes no extra arguments to a generator callable, but tells a pipeline, whose
        # own default may be set otherwise (set_sampling)
        sampling = ({"candidates": opts.candidates, "diversity": opts.diversity}
                    if opts.candidates > 1 or hasattr(ctx.generator, "set_sampling") else {})
        chunks = []
        for c, start in enumerate(range(0, len(texts), step)):
            part = texts[start : start + step]
            imgs = ctx.generator(part, num_images_per_prompt=k, seed=opts.seed + c, output_type="pt", stage=opts.stage,
                                 **sampling).images
            if not isinstance(imgs, torch.Tensor) or imgs.dtype != torch.uint8 or tuple(imgs.shape) != (len(part) * k, 3, r, r):
                raise MetricError(f"the generator returned {getattr(imgs, 'dtype', type(imgs))} "
                                  f"{tuple(getattr(imgs, 'shape', ()))}; expected uint8 [{len(part) * k}, 3, {r}, {r}]")
            chunks.append(imgs)
            if c % 4 == 3 or start + step >= len(texts):
                log.info("generated %d / %d prompts x %d samples", min(start + step, len(texts)), len(texts), k)
        return torch.cat(chunks)

    return ctx.cached("samples", make)


def real_images(ctx: EvalContext) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Two independent draws (A: reference, B: ceiling) of K real images per prompt, uint8 `[P * K, 3, R, R]` each."""

    def make():
        opts, entries = ctx.options, prompt_set(ctx)["prompts"]
        k, r = opts.samples_per_prompt, ctx.resolution
        pool = ShapesDataset(opts.real_pool_size, "test", seed=0, cache_dir="")
        ref = torch.empty(len(entries) * k, 3, r, r, dtype=torch.uint8)
        alt = torch.empty_like(ref)
        from_pool = rendered = 0
        for i, e in enumerate(entries):
            rng = random.Random(f"stackgan-eval-real/{opts.seed}/{e.get('id', i)}")
            idx = [int(j) for j in pool.matching(e["attributes"])]
            rng.shuffle(idx)
            imgs = [pool.image(j, r) for j in idx[: 2 * k]]
            from_pool += len(imgs)
            while len(imgs) < 2 * k:
                a = sample_attributes(rng, fixed=e["attributes"])
                imgs.append(torch.from_numpy(render(a, r).transpose(2, 0, 1).copy()))
                rendered += 1
            ref[i * k : (i + 1) * k] = torch.stack(imgs[0::2])  # interleaved: both draws mix pool and rendered alike
            alt[i * k : (i + 1) * k] = torch.stack(imgs[1::2])
        info = {"source": f"shapes test split (seed 0, {opts.real_pool_size} images) matching each prompt; "
                          "the shortfall rendered with the named attributes fixed, the rest sampled as in the data set",
                "per_prompt": f"2 x {k} (draw A = reference, draw B = ceiling)",
                "from_pool": from_pool, "rendered_conditionally": rendered, "resolution": r,
                "seed_rule": f"random.Random('stackgan-eval-real/{opts.seed}/<prompt id>') shuffles matches and samples renders"}
        return ref, alt, info

    return ctx.cached("real images", make)


def probe_outputs(ctx: EvalContext, which: str) -> tuple[torch.Tensor, dict[str, np.ndarray]]:
    """One probe pass over "model", "real_ref" or "real_alt" images: (features `[P * K, F]`, readings per attribute)."""

    def make():
        probe, _ = probe_of(ctx)
        images = {"model": lambda: generated(ctx), "real_ref": lambda: real_images(ctx)[0],
                  "real_alt": lambda: real_images(ctx)[1]}[which]()
        feats, pred = probe.run(images)
        return feats, {k: v.numpy() for k, v in pred.items()}

    return ctx.cached(f"probe pass over {which}", make)


def readings(ctx: EvalContext, which: str) -> dict[str, np.ndarray]:
    """Probe readings (value index per attribute, `[P * K]`) of "model", "real_ref" or "real_alt" images."""
    return probe_outputs(ctx, which)[1]


def protocol(ctx: EvalContext, **extra: Any) -> dict[str, Any]:
    """What decides a number, recorded with it."""
    import torchmetrics

    import stackgan

    opts, ps = ctx.options, prompt_set(ctx)
    _, cfg = probe_of(ctx)
    k, p = opts.samples_per_prompt, len(ps["prompts"])
    acc = cfg.get("test_accuracy", {})
    out = {
        "prompt_set": {"version": ps["version"], "sha256": ps["sha256"], "num_prompts": p, "of": ps["total"]},
        "samples_per_prompt": k,
        "num_samples": p * k,
        "seed": opts.seed,
        "seed_rule": f"generator call c holds prompts [c*{opts.prompts_per_call}, (c+1)*{opts.prompts_per_call}) "
                     f"and uses seed + c",
        "stage": opts.stage,
        "sampling": {"candidates": opts.candidates, "diversity": opts.diversity} if opts.candidates > 1 else "plain",
        "sampling_from": opts.sampling_from,
        "model_id": ctx.model_id,
        "model_resolution": ctx.resolution,
        "resize_mode": resize_mode_for(ctx.resolution),
        "probe": {"version": cfg.get("version", PROBE_VERSION), "weights_sha256": cfg.get("weights_sha256"),
                  "test_accuracy": acc.get("per_attribute"),
                  "test_accuracy_resized": acc.get("resized_from_other_resolutions", {}).get(f"{ctx.resolution}px_resized")},
        "versions": {"stackgan": getattr(stackgan, "__version__", "?"), "torch": torch.__version__,
                     "torchmetrics": torchmetrics.__version__},
    }
    if "real images" in ctx.cache:
        out["real_images"] = ctx.cache["real images"][2]
    out.update(extra)
    return out


# ---------------------------------------------------------------------------------------------- scores
def faithfulness_scores(pred: dict[str, np.ndarray], prompts: list[dict[str, Any]], k: int) -> dict[str, Any]:
    """Share of (sample, named attribute) pairs read back as named, overall and per attribute; share of samples all right;
    per attribute a confusion matrix: counts[named value][value read] over the samples of prompts naming it."""
    hits = {a: 0 for a in ATTRIBUTES}
    total = {a: 0 for a in ATTRIBUTES}
    confusion = {a: np.zeros((len(vals), len(vals)), dtype=np.int64) for a, vals in ATTRIBUTES.items()}
    all_right = 0
    for i, e in enumerate(prompts):
        sl = slice(i * k, (i + 1) * k)
        ok = np.ones(k, dtype=bool)
        for a, v in e["attributes"].items():
            named = ATTRIBUTES[a].index(v)
            hit = pred[a][sl] == named
            hits[a] += int(hit.sum())
            total[a] += k
            ok &= hit
            np.add.at(confusion[a][named], pred[a][sl], 1)
        all_right += int(ok.sum())
    n = sum(total.values())
    return {"overall": sum(hits.values()) / n if n else float("nan"),
            "all_named": all_right / (len(prompts) * k) if prompts else float("nan"),
            "per_attribute": {a: hits[a] / total[a] if total[a] else None for a in ATTRIBUTES},
            "confusion": {a: {"values": list(ATTRIBUTES[a]), "counts": confusion[a].tolist()} for a in ATTRIBUTES},
            "readings": n}


def diversity_scores(pred: dict[str, np.ndarray], ref: dict[str, np.ndarray], prompts: list[dict[str, Any]],
                     k: int) -> dict[str, Any]:
    """Coverage / entropy / recall of unnamed attributes (see the module docstring), overall and per attribute."""
    rows: dict[str, list[tuple[float, float, float, float]]] = {a: [] for a in ATTRIBUTES}
    for i, e in enumerate(prompts):
        sl = slice(i * k, (i + 1) * k)
        for a, values in ATTRIBUTES.items():
            if a in e["attributes"]:
                continue
            s, r = pred[a][sl], ref[a][sl]
            ds, dr = set(s.tolist()), set(r.tolist())
            raw = len(ds) / len(dr)
            counts = np.bincount(s, minlength=len(values))
            q = counts[counts > 0] / k
            entropy = float(-(q * np.log(q)).sum() / math.log(len(values)))
            rows[a].append((min(1.0, raw), raw, entropy, len(ds & dr) / len(dr)))
    everything = [r for rs in rows.values() for r in rs]
    if not everything:
        raise MetricError("diversity needs prompts that leave at least one attribute unnamed; every prompt names all five")

    def mean(rs: list[tuple[float, ...]], j: int) -> float | None:
        return float(np.mean([r[j] for r in rs])) if rs else None

    per = {a: {"coverage": mean(rs, 0), "coverage_uncapped": mean(rs, 1), "entropy": mean(rs, 2), "recall": mean(rs, 3),
               "pairs": len(rs)} for a, rs in rows.items()}
    return {"coverage": mean(everything, 0), "coverage_uncapped": mean(everything, 1), "entropy": mean(everything, 2),
            "recall": mean(everything, 3), "pairs": len(everything), "per_attribute": per}


def frechet_distances(feature: torch.nn.Module, real: torch.Tensor, fakes: list[torch.Tensor],
                      batch_size: int = 256) -> list[float]:
    """torchmetrics FID of each of `fakes` against `real` with a custom feature module (real features computed once).

    Images are uint8 `[N, 3, H, W]`, fed to the metric as floats in [0, 1] (normalize=True).
    """
    from torchmetrics.image.fid import FrechetInceptionDistance

    fid = FrechetInceptionDistance(feature=feature, normalize=True, reset_real_features=False)
    out = []
    with torch.no_grad():
        for i in range(0, real.shape[0], batch_size):
            fid.update(real[i : i + batch_size].float() / 255.0, real=True)
        for fake in fakes:
            fid.reset()  # keeps the real statistics
            for i in range(0, fake.shape[0], batch_size):
                fid.update(fake[i : i + batch_size].float() / 255.0, real=False)
            out.append(float(fid.compute()))
    return out


def min_fid_samples(feature_dim: int, factor: float) -> int:
    return int(math.ceil(factor * feature_dim))


# ---------------------------------------------------------------------------------------------- metrics
def _check_probe(ctx: EvalContext) -> None:
    probe_of(ctx)
    prompt_set(ctx)


@register("faithfulness", check=_check_probe)
def faithfulness(ctx: EvalContext) -> dict[str, Any]:
    entries, k = prompt_set(ctx)["prompts"], ctx.options.samples_per_prompt
    model = faithfulness_scores(readings(ctx, "model"), entries, k)
    real = faithfulness_scores(readings(ctx, "real_alt"), entries, k)
    return {"label": "faithfulness: share of named attributes the probe reads back", "model": model, "real": real,
            "table": {"faithfulness": {"model": model["overall"], "real": real["overall"]},
                      "all named right": {"model": model["all_named"], "real": real["all_named"]}},
            "protocol": protocol(ctx, feature_extractor=_probe_extractor(ctx, "classifier heads (argmax)"))}


@register("diversity", check=_check_probe)
def diversity(ctx: EvalContext) -> dict[str, Any]:
    entries, k = prompt_set(ctx)["prompts"], ctx.options.samples_per_prompt
    ref = readings(ctx, "real_ref")
    model = diversity_scores(readings(ctx, "model"), ref, entries, k)
    real = diversity_scores(readings(ctx, "real_alt"), ref, entries, k)
    return {"label": "per-prompt diversity of unnamed attributes (coverage relative to real draw A; normalised entropy)",
            "model": model, "real": real,
            "table": {"coverage": {"model": model["coverage"], "real": real["coverage"]},
                      "entropy": {"model": model["entropy"], "real": real["entropy"]}},
            "protocol": protocol(ctx, feature_extractor=_probe_extractor(ctx, "classifier heads (argmax)"),
                                 reference="real draw A (K images matching each prompt)")}


def _check_fid(ctx: EvalContext) -> None:
    probe, _ = probe_of(ctx)
    n = len(prompt_set(ctx)["prompts"]) * ctx.options.samples_per_prompt
    need = min_fid_samples(probe.feature_dim, ctx.options.fid_min_factor)
    if n < need:
        raise MetricError(f"probe_fid needs at least {need} samples per side ({ctx.options.fid_min_factor:g} x the "
                          f"{probe.feature_dim}-d probe features) but this evaluation has {n} "
                          f"({len(prompt_set(ctx)['prompts'])} prompts x {ctx.options.samples_per_prompt}); "
                          "use more prompts or a larger --samples-per-prompt")


@register("probe_fid", check=_check_fid)
def probe_fid(ctx: EvalContext) -> dict[str, Any]:
    _check_fid(ctx)
    probe, _ = probe_of(ctx)
    ref, alt, _ = real_images(ctx)
    model, real = frechet_distances(ProbeFeatures(probe), ref, [generated(ctx), alt])
    return {"label": PROBE_FID_LABEL, "model": {"value": model}, "real": {"value": real},
            "table": {"probe-FID": {"model": model, "real": real}},
            "protocol": protocol(ctx, feature_extractor=_probe_extractor(ctx, f"penultimate layer, {probe.feature_dim}-d"),
                                 reference="real draw A", num_real=int(ref.shape[0]), num_fake=int(ref.shape[0]),
                                 implementation="torchmetrics.image.fid.FrechetInceptionDistance(feature=probe, normalize=True)")}


def _probe_extractor(ctx: EvalContext, part: str) -> dict[str, Any]:
    _, cfg = probe_of(ctx)
    return {"name": f"{cfg.get('version', PROBE_VERSION)} {part}", "weights_sha256": cfg.get("weights_sha256")}
