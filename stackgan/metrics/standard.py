"""Standard metrics, usable offline when their weights are on this machine.

- `fid`, `kid`, `inception_score`: the FID Inception (torch-fidelity's port of the TF 2015-12-05
  graph, the network torchmetrics builds for `FrechetInceptionDistance(feature=2048)`), loaded
  from a local file given as `inception_weights` (weights-inception-2015-12-05-6726825d.pth). Each image
  set goes through Inception once: the 2048-d pool features feed torchmetrics'
  FrechetInceptionDistance / KernelInceptionDistance and the unbiased logits
  (features @ fc.weight.T, as torch-fidelity computes them) feed InceptionScore, each through an
  identity feature module. Needs the `torch-fidelity` package.
- `clip_score`: 100 * max(cos(image, prompt), 0), averaged, with an open_clip model from local weights.
- `clip_r_precision`: for each sample, is its prompt ranked first among itself and up to R - 1
  other prompts of the set that contradict it on an attribute both name (a prompt that merely
  leaves attributes open is never counted as a wrong answer)?
- `lpips_diversity`: mean LPIPS distance between pairs of samples of one prompt (torchmetrics'
  LPIPS with its shipped linear layers; the AlexNet/VGG16 ImageNet backbone from a local file).
- `feature_diversity`: mean pairwise cosine distance between the K samples of one prompt in a
  named feature space (probe, clip or inception).

Every result has a `real` row: the same code on real images matching the prompts (draw B;
draw A is the reference for FID and KID).
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import EvalContext, MetricError, register
from .probe import file_sha256
from .shapes_bench import generated, probe_of, probe_outputs, prompt_set, protocol, real_images

log = logging.getLogger(__name__)

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_HELP = (f"the FID Inception weights {INCEPTION_FILE}, the file torch-fidelity downloads (its address is "
                  "torch_fidelity.feature_extractor_inceptionv3.URL_INCEPTION_V3). Download it on a machine with "
                  "network access, copy it anywhere here and pass --inception-weights /path/to/" + INCEPTION_FILE)
LPIPS_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}
LPIPS_WEIGHT_ENUMS = {"alex": "AlexNet_Weights.IMAGENET1K_V1", "vgg": "VGG16_Weights.IMAGENET1K_V1"}


class _Precomputed(nn.Module):
    """Identity 'feature extractor': lets torchmetrics' FID/KID/IS consume features computed once."""

    def __init__(self, dim: int):
        super().__init__()
        self.num_features = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _image_sets(ctx: EvalContext) -> dict[str, torch.Tensor]:
    ref, alt, _ = real_images(ctx)
    return {"model": generated(ctx), "real_ref": ref, "real_alt": alt}


def _n_samples(ctx: EvalContext) -> int:
    return len(prompt_set(ctx)["prompts"]) * ctx.options.samples_per_prompt


# ---------------------------------------------------------------------------------------------- Inception
def _check_inception(ctx: EvalContext) -> None:
    if "inception_module" in ctx.options.extra:
        return
    path = ctx.options.inception_weights
    if not path:
        raise MetricError("fid, kid and inception_score need " + INCEPTION_HELP)
    if not Path(path).is_file():
        raise MetricError(f"--inception-weights {path} does not exist; it should be " + INCEPTION_HELP)
    try:
        import torch_fidelity  # noqa: F401
    except ImportError:
        raise MetricError("the FID Inception network comes from the torch-fidelity package: pip install torch-fidelity") from None


def _check_inception_fid(ctx: EvalContext) -> None:
    _check_inception(ctx)
    dim = int(getattr(ctx.options.extra.get("inception_module"), "num_features", 2048))
    need = int(np.ceil(ctx.options.fid_min_factor * dim))
    if _n_samples(ctx) < need:
        raise MetricError(f"Inception FID/KID needs at least {need} samples ({ctx.options.fid_min_factor:g} x {dim} features); "
                          f"this evaluation has {_n_samples(ctx)}: use more prompts or a larger --samples-per-prompt")


def inception_network(ctx: EvalContext) -> tuple[nn.Module, dict[str, Any]]:
    """(module: uint8 `[B, 3, H, W]` -> `[B, 2048]` with a `.fc` Linear(2048, 1008), description for the protocol).

    `options.extra["inception_module"]` replaces it with any module of that form (`[B, F]`, `.fc`
    Linear(F, classes), optional `num_features`): tests use a tiny one.
    """

    def make():
        _check_inception(ctx)
        hook = ctx.options.extra.get("inception_module")
        if hook is not None:
            return hook.eval().requires_grad_(False), {"name": f"custom module {type(hook).__name__}", "weights_sha256": None,
                                 "resize_mode": "the module's own"}
        from torchmetrics.image.fid import NoTrainInceptionV3

        path = str(ctx.options.inception_weights)
        try:  # refuse anything but plain tensors before torch-fidelity unpickles the file
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise MetricError(f"{path} is not a weights file that loads safely ({e}); expected " + INCEPTION_HELP) from None
        if not isinstance(state, dict) or "fc.weight" not in state:
            raise MetricError(f"{path} is not the FID Inception state dict (no fc.weight); expected " + INCEPTION_HELP)
        try:
            net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=path)
        except RuntimeError as e:
            raise MetricError(f"{path} does not match the FID Inception network: {e}") from None
        return net, {"name": "FID Inception v3 (torch-fidelity inception-v3-compat, 2048-d pool3)",
                     "weights_file": path, "weights_sha256": file_sha256(path),
                     "resize_mode": "torchmetrics NoTrainInceptionV3: bilinear, antialias=True, to 299 px; (x - 128) / 128"}

    return ctx.cached("inception network", make)


def inception_features(ctx: EvalContext, which: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(pool features `[N, 2048]`, unbiased logits `[N, 1008]`) of "model", "real_ref" or "real_alt" images."""

    def make():
        net, _ = inception_network(ctx)
        images = _image_sets(ctx)[which]
        with torch.no_grad():
            f = torch.cat([net(images[i : i + 64]).double() for i in range(0, images.shape[0], 64)])
            return f, f @ net.fc.weight.double().T  # torch-fidelity's "logits_unbiased"

    return ctx.cached(f"inception features of {which}", make)


def _seeded(seed: int):
    return torch.random.fork_rng(devices=[])  # torchmetrics KID/IS draw subsets with the global RNG


@register("fid", check=_check_inception_fid)
def fid(ctx: EvalContext) -> dict[str, Any]:
    from torchmetrics.image.fid import FrechetInceptionDistance

    ref, _ = inception_features(ctx, "real_ref")
    values = {}
    for row, which in (("model", "model"), ("real", "real_alt")):
        m = FrechetInceptionDistance(feature=_Precomputed(ref.shape[1]))
        m.update(ref, real=True)
        m.update(inception_features(ctx, which)[0], real=False)
        values[row] = float(m.compute())
    _, desc = inception_network(ctx)
    return {"label": "FID (Inception, 2048-d)", "model": {"value": values["model"]}, "real": {"value": values["real"]},
            "table": {"FID": values},
            "protocol": protocol(ctx, feature_extractor=desc, reference="real draw A", num_real=int(ref.shape[0]),
                                 implementation="torchmetrics FrechetInceptionDistance on the Inception pool features")}


@register("kid", check=_check_inception_fid)
def kid(ctx: EvalContext) -> dict[str, Any]:
    from torchmetrics.image.kid import KernelInceptionDistance

    ref, _ = inception_features(ctx, "real_ref")
    n = min(ref.shape[0], 1000)
    rows = {}
    for row, which in (("model", "model"), ("real", "real_alt")):
        with _seeded(ctx.options.seed):
            torch.manual_seed(ctx.options.seed)
            m = KernelInceptionDistance(feature=_Precomputed(ref.shape[1]), subsets=100, subset_size=n)
            m.update(ref, real=True)
            m.update(inception_features(ctx, which)[0], real=False)
            mean, std = m.compute()
        rows[row] = {"value": float(mean), "std": float(std)}
    _, desc = inception_network(ctx)
    return {"label": "KID (Inception, cubic polynomial kernel)", "model": rows["model"], "real": rows["real"],
            "table": {"KID": {"model": rows["model"]["value"], "real": rows["real"]["value"]}},
            "protocol": protocol(ctx, feature_extractor=desc, reference="real draw A", subsets=100, subset_size=n,
                                 subset_seed=ctx.options.seed)}


@register("inception_score", check=_check_inception)
def inception_score(ctx: EvalContext) -> dict[str, Any]:
    from torchmetrics.image.inception import InceptionScore

    rows = {}
    for row, which in (("model", "model"), ("real", "real_alt")):
        _, logits = inception_features(ctx, which)
        with _seeded(ctx.options.seed):
            torch.manual_seed(ctx.options.seed)
            m = InceptionScore(feature=_Precomputed(logits.shape[1]), splits=10)
            m.update(logits)
            mean, std = m.compute()
        rows[row] = {"value": float(mean), "std": float(std)}
    _, desc = inception_network(ctx)
    return {"label": "Inception Score (10 splits)", "model": rows["model"], "real": rows["real"],
            "table": {"IS": {"model": rows["model"]["value"], "real": rows["real"]["value"]}},
            "protocol": protocol(ctx, feature_extractor={**desc, "output": "logits_unbiased"}, splits=10,
                                 split_seed=ctx.options.seed)}


# ---------------------------------------------------------------------------------------------- CLIP
def _check_clip(ctx: EvalContext) -> None:
    model, weights = ctx.options.clip_model, ctx.options.clip_weights
    if not model:
        raise MetricError("CLIP metrics need an open_clip model with local weights: --clip-model ViT-B-32 "
                          "--clip-weights /path/to/open_clip_model.safetensors (download it from the model's "
                          "Hugging Face repository on a machine with network access), or --clip-model local-dir:/folder "
                          "holding open_clip_config.json + open_clip_model.safetensors")
    if model.startswith("local-dir:"):
        folder = Path(model[len("local-dir:") :])
        for f in ("open_clip_config.json", "open_clip_model.safetensors"):
            if not (folder / f).is_file():
                raise MetricError(f"--clip-model {model}: {folder / f} is missing; the folder must hold "
                                  "open_clip_config.json and open_clip_model.safetensors")
        return
    if weights == "random":  # an untrained model: only for tests of the code path
        return
    if not weights:
        raise MetricError(f"--clip-model {model} needs its weights file: --clip-weights /path/to/open_clip_model.safetensors")
    if not Path(weights).is_file():
        raise MetricError(f"--clip-weights {weights} does not exist; put the open_clip weights of {model} there")


def clip_encoder(ctx: EvalContext):
    def make():
        from ..text.encoder import TextEncoderError, load_text_encoder

        _check_clip(ctx)
        weights = "" if ctx.options.clip_weights == "random" else (ctx.options.clip_weights or "")
        try:
            enc = load_text_encoder(ctx.options.clip_model, weights)
        except TextEncoderError as e:
            raise MetricError(str(e)) from None
        if not hasattr(enc.model, "encode_image"):
            raise MetricError(f"{ctx.options.clip_model} has no image tower")
        size = enc.model.visual.image_size
        desc = {"name": f"open_clip {enc.name}", "weights_sha256": enc.identity.weights_sha256,
                "weights_sha256_kind": "sha256 over the state dict tensors (stackgan.text.encoder.weights_hash)",
                "resize_mode": f"bilinear, antialias=True, to {size} px; CLIP mean/std"}
        if weights and Path(weights).is_file():
            desc["weights_file_sha256"] = file_sha256(weights)
        return enc, desc

    return ctx.cached("clip encoder", make)


def clip_embeddings(ctx: EvalContext, which: str) -> torch.Tensor:
    def make():
        enc, _ = clip_encoder(ctx)
        images = _image_sets(ctx)[which]
        return torch.cat([enc.encode_images(images[i : i + 256]) for i in range(0, images.shape[0], 256)])

    return ctx.cached(f"clip embeddings of {which}", make)


def clip_text_embeddings(ctx: EvalContext) -> torch.Tensor:
    enc, _ = clip_encoder(ctx)
    return ctx.cached("clip text embeddings", lambda: enc.encode([e["prompt"] for e in prompt_set(ctx)["prompts"]]))


@register("clip_score", check=_check_clip)
def clip_score(ctx: EvalContext) -> dict[str, Any]:
    k = ctx.options.samples_per_prompt
    text = clip_text_embeddings(ctx).repeat_interleave(k, dim=0)
    rows = {}
    for row, which in (("model", "model"), ("real", "real_alt")):
        cos = (clip_embeddings(ctx, which) * text).sum(1)
        rows[row] = {"value": float((100 * cos.clamp(min=0)).mean())}
    _, desc = clip_encoder(ctx)
    return {"label": "CLIP score: 100 * max(cos(image, prompt), 0), mean", "model": rows["model"], "real": rows["real"],
            "table": {"CLIP score": {"model": rows["model"]["value"], "real": rows["real"]["value"]}},
            "protocol": protocol(ctx, feature_extractor=desc)}


def contradicting(a: dict[str, str], b: dict[str, str]) -> bool:
    """True when prompts naming `a` and `b` disagree on an attribute both name (b cannot describe a faithful image of a)."""
    return any(k in b and b[k] != v for k, v in a.items())


@register("clip_r_precision", check=_check_clip)
def clip_r_precision(ctx: EvalContext) -> dict[str, Any]:
    entries, k = prompt_set(ctx)["prompts"], ctx.options.samples_per_prompt
    r = ctx.options.r_precision_candidates
    text = clip_text_embeddings(ctx)  # [P, D]
    negatives = [[j for j, f in enumerate(entries) if contradicting(e["attributes"], f["attributes"])] for e in entries]
    rows, cand_counts = {}, []
    for row, which in (("model", "model"), ("real", "real_alt")):
        sims = clip_embeddings(ctx, which) @ text.T  # [P * K, P]
        hits, scored = 0, 0
        for p, e in enumerate(entries):
            rng = random.Random(f"stackgan-eval-rprec/{ctx.options.seed}/{e.get('id', p)}/{row}")
            if not negatives[p]:
                continue
            for s in range(k):
                negs = rng.sample(negatives[p], min(r - 1, len(negatives[p])))
                i = p * k + s
                hits += int(sims[i, p] > sims[i, negs].max())
                scored += 1
                if row == "model":
                    cand_counts.append(1 + len(negs))
        rows[row] = {"value": hits / scored if scored else None, "scored_samples": scored}
    _, desc = clip_encoder(ctx)
    return {"label": f"CLIP R-precision (true prompt ranked first among <= {r} candidates)", "model": rows["model"],
            "real": rows["real"],
            "table": {"CLIP R-precision": {"model": rows["model"]["value"], "real": rows["real"]["value"]}},
            "protocol": protocol(ctx, feature_extractor=desc, candidates=r,
                                 mean_candidates=float(np.mean(cand_counts)) if cand_counts else 0.0,
                                 negatives="prompts of the set contradicting the true prompt on an attribute both name",
                                 prompts_without_negatives=sum(1 for n in negatives if not n))}


# ---------------------------------------------------------------------------------------------- LPIPS
def _check_lpips(ctx: EvalContext) -> None:
    net, path = ctx.options.lpips_net, ctx.options.lpips_weights
    if net not in LPIPS_FILES:
        raise MetricError(f"lpips_net must be one of {', '.join(LPIPS_FILES)}, got {net!r}")
    help_ = (f"torchvision's {LPIPS_WEIGHT_ENUMS[net]} file {LPIPS_FILES[net]} (its address is "
             f"torchvision.models.{LPIPS_WEIGHT_ENUMS[net]}.url); download it on a machine with network access and pass "
             f"--lpips-weights /path/to/{LPIPS_FILES[net]}")
    if not path:
        raise MetricError(f"lpips_diversity needs the LPIPS backbone weights: {help_}")
    if not Path(path).is_file():
        raise MetricError(f"--lpips-weights {path} does not exist; it should be {help_}")


def lpips_network(ctx: EvalContext) -> tuple[nn.Module, dict[str, Any]]:
    def make():
        from torchmetrics.functional.image.lpips import _NoTrainLpips

        _check_lpips(ctx)
        net, path = ctx.options.lpips_net, str(ctx.options.lpips_weights)
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as e:
                raise MetricError(f"{path} cannot be loaded as a torchvision state dict: {e}") from None
        # pnet_rand: build the backbone without downloading; then fill it from the local file.
        lp = _NoTrainLpips(pretrained=True, net=net, pnet_rand=True)
        target = {}
        for sname, seq in lp.net.named_children():
            for idx, mod in seq.named_children():
                for pname, _ in mod.named_parameters():
                    target[f"features.{idx}.{pname}"] = f"{sname}.{idx}.{pname}"
        missing = [k for k in target if k not in state]
        if missing:
            raise MetricError(f"{path} lacks {', '.join(missing[:4])}: it is not torchvision's {LPIPS_WEIGHT_ENUMS[net]} "
                              f"state dict ({LPIPS_FILES[net]})")
        own = lp.net.state_dict()
        for k, dst in target.items():
            if own[dst].shape != state[k].shape:
                raise MetricError(f"{path}: {k} has shape {tuple(state[k].shape)}, the {net} backbone needs {tuple(own[dst].shape)}")
        lp.net.load_state_dict({dst: state[k] for k, dst in target.items()}, strict=True)
        return lp.eval(), {"name": f"LPIPS v0.1 {net} (torchmetrics linear layers)", "weights_file": path,
                           "weights_sha256": file_sha256(path), "resize_mode": "none (model resolution); inputs in [0, 1]"}

    return ctx.cached("lpips network", make)


def _pairs(k: int, limit: int, rng: random.Random) -> list[tuple[int, int]]:
    pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
    return pairs if len(pairs) <= limit else rng.sample(pairs, limit)


@register("lpips_diversity", check=_check_lpips)
def lpips_diversity(ctx: EvalContext, pairs_per_prompt: int = 32) -> dict[str, Any]:
    net, desc = lpips_network(ctx)
    entries, k = prompt_set(ctx)["prompts"], ctx.options.samples_per_prompt
    rows = {}
    for row, which in (("model", "model"), ("real", "real_alt")):
        images = _image_sets(ctx)[which]
        a_idx, b_idx = [], []
        for p, e in enumerate(entries):
            rng = random.Random(f"stackgan-eval-lpips/{ctx.options.seed}/{e.get('id', p)}")
            for i, j in _pairs(k, pairs_per_prompt, rng):
                a_idx.append(p * k + i)
                b_idx.append(p * k + j)
        dists = []
        with torch.no_grad():
            for s in range(0, len(a_idx), 128):
                a = images[a_idx[s : s + 128]].float() / 255.0
                b = images[b_idx[s : s + 128]].float() / 255.0
                dists.append(net(a, b, normalize=True).flatten())
        d = torch.cat(dists).view(-1)
        per_prompt = [float(x) for x in _per_prompt_means(d, a_idx, k, len(entries))]
        rows[row] = {"value": float(np.mean(per_prompt)), "pairs": len(a_idx)}
    return {"label": "LPIPS diversity: mean LPIPS between samples of one prompt (higher = more varied)",
            "model": rows["model"], "real": rows["real"],
            "table": {"LPIPS diversity": {"model": rows["model"]["value"], "real": rows["real"]["value"]}},
            "protocol": protocol(ctx, feature_extractor=desc, pairs_per_prompt=min(pairs_per_prompt, k * (k - 1) // 2))}


def _per_prompt_means(values: torch.Tensor, first_index: list[int], k: int, prompts: int) -> np.ndarray:
    owner = np.asarray(first_index) // k
    v = values.numpy()
    return np.array([v[owner == p].mean() for p in range(prompts) if (owner == p).any()])


# ---------------------------------------------------------------------------------------------- feature diversity
def _check_feature_space(ctx: EvalContext) -> None:
    space = ctx.options.feature_space
    if space == "clip":
        _check_clip(ctx)
    elif space == "inception":
        _check_inception(ctx)
    else:
        probe_of(ctx)


def _features(ctx: EvalContext, which: str) -> tuple[torch.Tensor, dict[str, Any]]:
    space = ctx.options.feature_space
    if space == "clip":
        return clip_embeddings(ctx, which), clip_encoder(ctx)[1]
    if space == "inception":
        return inception_features(ctx, which)[0].float(), inception_network(ctx)[1]
    probe, cfg = probe_of(ctx)
    feats = probe_outputs(ctx, which)[0]
    return feats, {"name": f"{cfg.get('version')} penultimate layer, {probe.feature_dim}-d",
                   "weights_sha256": cfg.get("weights_sha256")}


def mean_pairwise_cosine_distance(feats: torch.Tensor, k: int) -> float:
    """feats `[P * K, F]` prompt-major -> mean over prompts of the mean pairwise (1 - cos) among its K rows."""
    f = torch.nn.functional.normalize(feats.float(), dim=1).view(-1, k, feats.shape[1])  # [P, K, F]
    sim = f @ f.transpose(1, 2)  # [P, K, K]
    off = ~torch.eye(k, dtype=torch.bool)
    return float((1 - sim[:, off]).mean())


@register("feature_diversity", check=_check_feature_space)
def feature_diversity(ctx: EvalContext) -> dict[str, Any]:
    k = ctx.options.samples_per_prompt
    rows = {}
    for row, which in (("model", "model"), ("real", "real_alt")):
        feats, desc = _features(ctx, which)
        rows[row] = {"value": mean_pairwise_cosine_distance(feats, k)}
    space = ctx.options.feature_space
    return {"label": f"intra-prompt diversity: mean pairwise cosine distance in {space} features",
            "model": rows["model"], "real": rows["real"],
            "table": {f"{space}-feature diversity": {"model": rows["model"]["value"], "real": rows["real"]["value"]}},
            "protocol": protocol(ctx, feature_extractor=desc, feature_space=space)}
