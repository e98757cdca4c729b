"""How much of each caption attribute reaches the generators through conditioning augmentation?
`python -m benchmarks.condition_attributes [--model PATH|default] [--out DIR]`.

Each stage turns the caption embedding into N(mu, sigma^2) and draws its condition c from it
(StackGAN's conditioning augmentation); the KL term of training pulls mu towards 0 and sigma
towards 1, so the noise can drown what the caption says. For every attribute of the built-in
`shapes` data set this draws contexts (random attribute values and a random choice of the named
ones, always naming the attribute under test), writes one caption per value of that attribute
with everything else the same, and asks: given one draw of c from the caption of the true value,
which value does the best possible reader pick? The reader knows every candidate caption's mu and
sigma and picks the value with the highest Gaussian likelihood (Bayes-optimal among the
candidates, equal priors), so its accuracy is an upper bound on what any generator can tell
about that attribute from c alone. Chance is 1 / (number of values).

It is reported at noise scale 1 (what training and default sampling use) and smaller scales
(`pipe(..., noise_scale=s)` also scales z). A generator that draws an attribute less often than
this bound loses it in its own layers; one that reaches the bound is limited by the noise.
Writes DIR/condition_attributes.json and .md when --out is given.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import torch

from benchmarks import write_json


def _candidate_captions(attr: str, contexts: int, seed: int) -> list[list[str]]:
    """`contexts` lists of captions, one per value of `attr` (in ATTRIBUTES order), alike in all else."""
    from stackgan.data.shapes import ATTRIBUTES, make_caption, mention_of, sample_attributes

    rng = random.Random(seed)
    out = []
    for _ in range(contexts):
        named = sample_attributes(rng).named()
        mention = {**mention_of(rng), attr: True}
        wording = rng.randrange(2**31)  # the same template and synonym choices for every value, where possible
        out.append([make_caption(random.Random(wording), {**named, attr: v}, mention) for v in ATTRIBUTES[attr]])
    return out


def recoverable(mu: torch.Tensor, logvar: torch.Tensor, scale: float, draws: int, generator: torch.Generator) -> float:
    """mu, logvar `[C, V, d]` (context, candidate value, condition dims) -> the share of draws
    c ~ N(mu[c, v], (scale * sigma[c, v])^2) for which v has the highest likelihood among the V candidates."""
    ctx, values, dim = mu.shape
    sigma = (0.5 * logvar).exp() * scale
    eps = torch.randn(draws, ctx, values, dim, generator=generator, dtype=mu.dtype)
    c = mu + sigma * eps  # [draws, C, V(true), d]
    # log N(c; mu_w, sigma_w) for every candidate w, up to a constant: [draws, C, V(true), V(candidate)]
    z = (c[:, :, :, None, :] - mu[None, :, None]) / sigma[None, :, None]
    loglik = -0.5 * (z**2).sum(-1) - sigma.log().sum(-1)[None, :, None, :]
    truth = torch.arange(values)[None, None, :]
    return float((loglik.argmax(-1) == truth).float().mean())


@torch.inference_mode()
def measure(pipe, contexts: int = 200, draws: int = 16, scales: tuple[float, ...] = (1.0, 0.5, 0.25),
            seed: int = 0) -> dict:  # fmt: skip
    """Bayes-optimal recoverability of each attribute from each stage's condition, per noise scale."""
    from stackgan.data.shapes import ATTRIBUTES

    stages = {"stage1": pipe.stage1}
    if pipe.stage2 is not None:
        stages["stage2"] = pipe.stage2
    gen = torch.Generator().manual_seed(seed)
    rows: dict[str, dict] = {}
    for a, attr in enumerate(ATTRIBUTES):
        caps = _candidate_captions(attr, contexts, seed * 1000 + a)
        values = len(ATTRIBUTES[attr])
        emb = pipe.encode([c for group in caps for c in group]).float()
        distinct = sum(len(set(group)) == values for group in caps) / contexts
        rows[attr] = {"values": values, "chance": 1 / values, "contexts": contexts, "distinct_captions": distinct,
                      "example": caps[0]}  # fmt: skip
        for name, g in stages.items():
            _, mu, logvar = g.ca(emb, eps=torch.zeros(len(emb), g.cond_dim, device=emb.device))
            mu = mu.float().cpu().view(contexts, values, -1)
            logvar = logvar.float().cpu().view(contexts, values, -1)
            rows[attr][name] = {f"{s:g}": recoverable(mu, logvar, s, draws, gen) for s in scales}
    return {"model": pipe.model_id, "contexts": contexts, "draws": draws, "scales": list(scales), "seed": seed,
            "attributes": rows}  # fmt: skip


def markdown(res: dict) -> str:
    stages = [s for s in ("stage1", "stage2") if s in next(iter(res["attributes"].values()))]
    head = " | ".join(f"{s.replace('stage', 'stage ')} x{k}" for s in stages for k in res["scales"])
    lines = [f"Share of condition draws from which the best possible reader recovers the caption's attribute, "
             f"{res['model']} ({res['contexts']} contexts x {res['draws']} draws per value; noise scale x1 = training "
             "and default sampling).", "",
             f"| attribute | chance | {head} |", "|---|---:|" + "---:|" * (len(stages) * len(res["scales"]))]
    for attr, r in res["attributes"].items():
        cells = " | ".join(f"{r[s][f'{k:g}']:.2f}" for s in stages for k in res["scales"])
        lines.append(f"| {attr} | {r['chance']:.2f} | {cells} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="default", help="pipeline folder, or 'default' for the bundled model")
    p.add_argument("--contexts", type=int, default=200, help="caption contexts per attribute")
    p.add_argument("--draws", type=int, default=16, help="condition draws per context and value")
    p.add_argument("--scales", default="1,0.5,0.25", help="comma-separated noise scales")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="folder for the JSON and markdown table")
    args = p.parse_args(argv)
    if args.contexts < 1 or args.draws < 1:
        p.error("--contexts and --draws must be >= 1")
    try:
        scales = tuple(float(s) for s in args.scales.split(",") if s.strip())
    except ValueError:
        p.error(f"--scales must be comma-separated numbers, got {args.scales!r}")
    if not scales or any(s <= 0 for s in scales):
        p.error(f"--scales must be positive numbers, got {args.scales!r}")
    from stackgan.pipeline import PipelineError, StackGANPipeline

    t0 = time.time()
    try:
        pipe = StackGANPipeline.from_pretrained(args.model)
    except PipelineError as e:
        p.error(str(e))
    res = measure(pipe, args.contexts, args.draws, scales, args.seed)
    res["seconds"] = time.time() - t0
    table = markdown(res)
    print(table)
    if args.out:
        out = Path(args.out)
        write_json(out / "condition_attributes.json", res)
        (out / "condition_attributes.md").write_text(table, encoding="utf-8")
        print(f"wrote {out / 'condition_attributes.json'} and .md")


if __name__ == "__main__":
    main()
