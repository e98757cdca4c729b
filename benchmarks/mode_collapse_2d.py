"""2D mixture mode-collapse benchmark (VEEGAN / PacGAN protocol) for our anti-collapse layers.

    python -m benchmarks.mode_collapse_2d --out DIR [--seeds 5] [--iters N] \
        [--variants gan,mbd,mbstd,pacgan2,unrolled] [--quick]     (default variants: all but unrolled)

Data sets (REFERENCE.md section 3, "2D mixtures"): ring = 8 Gaussians at (cos 2 pi k/8, sin 2 pi k/8), sigma 0.01;
grid = 25 Gaussians at {-4,-2,0,2,4}^2, sigma 0.05. Every variant trains the same G and D trunk with the same optimiser,
batch and iterations; only the discriminator's anti-collapse device differs:

    gan       plain non-saturating GAN
    mbd       stackgan.models.minibatch.MinibatchDiscrimination on D's last hidden features
    mbstd     stackgan.models.minibatch.MinibatchStdDev on D's last hidden features (viewed as [N, C, 1, 1])
    pacgan2   D judges packs of 2 samples concatenated along features (Lin et al. 2018)
    unrolled  G is trained against D unrolled 5 differentiable Adam steps ahead (Metz et al. 2016)

Metrics on 2,500 generated samples: a sample is high quality (HQ) when within 3 sigma (Euclidean) of its nearest mean;
a mode is captured when it is the nearest mean of >= 1 HQ sample; reverse KL = KL(p_G || uniform) = log K - H(p_G) over
the mode histogram of the HQ samples. Writes DIR/results.json (per-seed figures, mean +- standard error, full
protocol), DIR/<variant>.png (training snapshots of seed 0, ring and grid), DIR/table.md (published rows beside ours)
and DIR/log.txt. Each run is seeded (seed s: torch.manual_seed(s) for the weights, its own data and noise generator
seeded with s, evaluation noise 10000 + s), so results reproduce. The runs of one variant and data set (every seed)
train side by side as one vectorised ensemble (torch.func.vmap over stacked weights; each run's losses, gradients and
Adam moments stay its own), single-threaded in one of --workers processes.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import math
import multiprocessing
import platform
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap
from torch.nn import functional as F

from stackgan.models.minibatch import MinibatchDiscrimination, MinibatchStdDev

log = logging.getLogger("mode_collapse_2d")

VARIANTS = ("gan", "mbd", "mbstd", "pacgan2", "unrolled")
# unrolled costs ~8x a plain GAN iteration (5 second-order D steps per G step): it does not fit the 15-minute budget
# beside the others and runs only when asked for with --variants.
DEFAULT_VARIANTS = ("gan", "mbd", "mbstd", "pacgan2")
COST = {"gan": 1.0, "pacgan2": 1.0, "mbstd": 1.5, "mbd": 2.0, "unrolled": 8.0}  # relative time per iteration
EVAL_SAMPLES = 2500  # generated samples scored per run (VEEGAN / PacGAN)
HQ_SIGMAS = 3.0  # high quality = within HQ_SIGMAS * sigma of the nearest mean

# Published rows as printed (PacGAN Table 1, VEEGAN Table 1): ring cell, grid cell = modes / HQ % / reverse KL.
PUBLISHED = (
    ("PacGAN table: GAN", "6.3 / 98.2 / 0.45", "17.3 / 94.8 / 0.70"),
    ("PacGAN table: PacGAN4", "7.8 / 95.9 / 0.07", "24.8 / 93.6 / 0.04"),
    ("VEEGAN table: GAN", "1 / 99.3 / -", "3.3 / 0.5 / -"),
    ("VEEGAN table: Unrolled GAN", "7.6 / 35.6 / -", "23.6 / 16 / -"),
    ("VEEGAN table: VEEGAN", "8 / 52.9 / -", "24.6 / 40 / -"),
)


# ----------------------------------------------------------------------------------------------------------------------
# Data and metrics


@dataclass(frozen=True)
class Mixture:
    """An equal-weight mixture of isotropic Gaussians in 2D."""

    name: str
    means: tuple[tuple[float, float], ...]  # K mode centres
    sigma: float  # standard deviation of every component

    @property
    def means_array(self) -> np.ndarray:
        return np.asarray(self.means, dtype=np.float64)  # [K, 2]


def ring_means(k: int = 8, radius: float = 1.0) -> np.ndarray:
    """K means evenly spaced on a circle, angles 2 pi i / K (never linspace(0, 2 pi, K): that repeats 0 = 2 pi). [K, 2]"""
    angles = 2.0 * math.pi * np.arange(k) / k
    return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def grid_means(side: int = 5, spacing: float = 2.0) -> np.ndarray:
    """side^2 means on a centred square lattice, {-4,-2,0,2,4}^2 by default. [side^2, 2]"""
    axis = spacing * (np.arange(side) - (side - 1) / 2)
    xx, yy = np.meshgrid(axis, axis, indexing="ij")
    return np.stack([xx.ravel(), yy.ravel()], axis=1)


def _as_tuple(means: np.ndarray) -> tuple[tuple[float, float], ...]:
    return tuple((float(x), float(y)) for x, y in means)


MIXTURES = {
    "ring": Mixture("ring", _as_tuple(ring_means()), 0.01),
    "grid": Mixture("grid", _as_tuple(grid_means()), 0.05),
}


def sample_mixture(mix: Mixture, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """n samples of the mixture, each component chosen uniformly. -> [n, 2] float32"""
    means = torch.tensor(mix.means, dtype=torch.float32)
    idx = torch.randint(len(means), (n,), generator=generator)
    return means[idx] + mix.sigma * torch.randn(n, 2, generator=generator)


def mode_metrics(samples: np.ndarray, means: np.ndarray, sigma: float, hq_sigmas: float = HQ_SIGMAS) -> dict[str, Any]:
    """Mode coverage of samples [N, 2] for a mixture with means [K, 2] and component std sigma.

    Returns modes (number of captured modes), hq (% of samples within hq_sigmas * sigma of their nearest mean, Euclidean),
    rev_kl (KL(p || uniform) = log K - H(p) of the mode histogram p of the HQ samples; None when no sample is HQ) and
    counts (HQ samples per mode, [K]).
    """
    samples = np.asarray(samples, dtype=np.float64)
    means = np.asarray(means, dtype=np.float64)
    assert samples.ndim == 2 and samples.shape[1] == 2 and means.ndim == 2 and means.shape[1] == 2
    dist = np.linalg.norm(samples[:, None, :] - means[None, :, :], axis=-1)  # [N, K]
    nearest = dist.argmin(axis=1)
    hq = dist[np.arange(len(samples)), nearest] <= hq_sigmas * sigma
    counts = np.bincount(nearest[hq], minlength=len(means))
    rev_kl = None
    if hq.any():
        p = counts / counts.sum()
        nz = p[p > 0]
        rev_kl = float(math.log(len(means)) + (nz * np.log(nz)).sum())
    return {
        "modes": int((counts > 0).sum()),
        "hq": float(100.0 * hq.mean()) if len(samples) else 0.0,
        "rev_kl": rev_kl,
        "counts": counts.tolist(),
    }


def mean_se(values: list[float | None]) -> dict[str, Any]:
    """Mean and standard error (sample std / sqrt(n)) over the defined values."""
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    if len(v) == 0:
        return {"mean": None, "se": None, "n": 0}
    se = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else 0.0
    return {"mean": float(v.mean()), "se": se, "n": int(len(v))}


# ----------------------------------------------------------------------------------------------------------------------
# Networks


@dataclass(frozen=True)
class Protocol:
    """Everything that defines a run except the variant, data set and seed; recorded in results.json."""

    iters: int = 4000  # training iterations (one D step + one G step each)
    batch: int = 128  # samples per D call, real and fake alike (pacgan2: batch // pack packs)
    z_dim: int = 16  # generator noise N(0, I)
    hidden: int = 128  # width of every hidden layer, G and D
    layers: int = 3  # hidden layers, G and D
    lr_g: float = 3e-3  # Adam learning rate of G
    lr_d: float = 3e-3  # Adam learning rate of D
    betas: tuple[float, float] = (0.5, 0.9)  # Adam betas, G and D
    lr_decay_from: float = 0.5  # learning rates decay linearly to 0 from this fraction of iters on
    ema: float = 0.0  # > 0: score an exponential moving average of G's weights (ramped up, as the image models do)
    normalize: bool = True  # G and D work in units of max |mean| (grid / 4); G's output is rescaled for scoring
    mbd_kernels: int = 16  # MinibatchDiscrimination B
    mbd_dims: int = 5  # MinibatchDiscrimination C
    mbd_reduce: str = "mean"  # MinibatchDiscrimination reduce ("sum": see docs/mode_collapse_2d/run_mbd_sum)
    mbd_group: int = 16  # samples compared by one minibatch feature (MBD)
    mbstd_group: int = 4  # samples per std group (MinibatchStdDev; ProGAN uses 4)
    pack: int = 2  # pacgan2 pack size
    unroll_steps: int = 5  # unrolled: differentiable D steps ahead of the G step
    eval_samples: int = EVAL_SAMPLES
    hq_sigmas: float = HQ_SIGMAS
    snapshots: int = 5  # training snapshots kept for the figure (seed 0)


def mlp(in_features: int, hidden: int, layers: int, out_features: int, act: type[nn.Module]) -> nn.Sequential:
    mods: list[nn.Module] = []
    for i in range(layers):
        mods += [nn.Linear(in_features if i == 0 else hidden, hidden), act()]
    mods.append(nn.Linear(hidden, out_features))
    return nn.Sequential(*mods)


class Generator(nn.Module):
    """z [N, z_dim] -> x [N, 2]; an MLP of `layers` ReLU layers."""

    def __init__(self, z_dim: int, hidden: int, layers: int):
        super().__init__()
        self.z_dim = z_dim
        self.net = mlp(z_dim, hidden, layers, 2, nn.ReLU)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class Discriminator(nn.Module):
    """x [N, 2] -> logits [N // pack]; an MLP trunk, an optional minibatch layer, a final linear layer.

    Args:
        hidden, layers: trunk width and depth (LeakyReLU 0.2).
        head:           "none", "mbd" (minibatch discrimination features concatenated to the trunk's output) or
                        "mbstd" (minibatch stddev appended as one feature).
        pack:           samples per D input (PacGAN): N consecutive samples form N // pack packs, concatenated along
                        features; callers pass all-real or all-fake batches.
        group:          samples compared by one minibatch feature (head "mbd" / "mbstd"); None = the whole batch.
        mbd_kernels, mbd_dims, mbd_reduce: B, C and reduce of MinibatchDiscrimination (head "mbd").
    """

    def __init__(self, hidden: int, layers: int, head: str = "none", pack: int = 1, group: int | None = None,
                 mbd_kernels: int = 16, mbd_dims: int = 5, mbd_reduce: str = "mean"):  # fmt: skip
        super().__init__()
        if head not in ("none", "mbd", "mbstd"):
            raise ValueError(f"head must be none, mbd or mbstd, got {head!r}")
        self.head, self.pack, self.group = head, pack, group
        trunk = mlp(2 * pack, hidden, layers, 1, lambda: nn.LeakyReLU(0.2))
        self.trunk = trunk[:-1]  # drop the output layer: features [N, hidden]
        extra = 0
        if head == "mbd":
            self.minibatch = MinibatchDiscrimination(hidden, kernels=mbd_kernels, dims=mbd_dims, reduce=mbd_reduce)
            extra = mbd_kernels
        elif head == "mbstd":
            self.minibatch = MinibatchStdDev()
            extra = 1
        self.out = nn.Linear(hidden + extra, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        assert x.ndim == 2 and x.shape[1] == 2 and n % self.pack == 0, x.shape
        h = self.trunk(x.reshape(n // self.pack, 2 * self.pack))  # [N/pack, hidden]
        if self.head == "mbd":
            h = torch.cat([h, self.minibatch(h, self.group)], dim=1)  # [N, hidden + B]
        elif self.head == "mbstd":
            h = self.minibatch(h[:, :, None, None], self.group).flatten(1)  # [N, C, 1, 1] -> [N, C + 1]
        return self.out(h).squeeze(1)


def build_models(variant: str, proto: Protocol) -> tuple[Generator, Discriminator]:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    g = Generator(proto.z_dim, proto.hidden, proto.layers)
    head = {"mbd": "mbd", "mbstd": "mbstd"}.get(variant, "none")
    group = {"mbd": proto.mbd_group, "mbstd": proto.mbstd_group}.get(variant)
    pack = proto.pack if variant == "pacgan2" else 1
    d = Discriminator(proto.hidden, proto.layers, head, pack, group, proto.mbd_kernels, proto.mbd_dims, proto.mbd_reduce)
    return g, d


# ----------------------------------------------------------------------------------------------------------------------
# Losses and training


def d_loss_fn(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Standard GAN discriminator loss (binary cross-entropy on logits)."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def g_loss_fn(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss."""
    return F.softplus(-fake_logits).mean()


def unrolled_d_params(d_fn: Any, params: dict[str, torch.Tensor], opt_d: torch.optim.Adam, real: torch.Tensor,
                      fake: torch.Tensor, steps: int) -> dict[str, torch.Tensor]:  # fmt: skip
    """D's parameters after `steps` differentiable Adam steps on (real, fake), starting from D's current parameters
    `params` and the moments of `opt_d`; gradients flow back to `fake` (Metz et al. 2016, eq. 3-5).

    d_fn(params, x) -> logits; the parameters may be stacked over an ensemble, whose members' losses are summed."""
    group = opt_d.param_groups[0]
    lr, (b1, b2), eps = group["lr"], group["betas"], group["eps"]
    state = {name: opt_d.state.get(p, {}) for name, p in params.items()}
    m = {k: s["exp_avg"] if s else torch.zeros_like(params[k]) for k, s in state.items()}
    v = {k: s["exp_avg_sq"] if s else torch.zeros_like(params[k]) for k, s in state.items()}
    t0 = {k: float(s["step"]) if s else 0.0 for k, s in state.items()}
    for i in range(steps):
        loss = real.shape[0] * d_loss_fn(d_fn(params, real), d_fn(params, fake))
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
        new = {}
        for (k, p), gr in zip(params.items(), grads):
            t = t0[k] + i + 1
            m[k] = b1 * m[k] + (1 - b1) * gr
            v[k] = b2 * v[k] + (1 - b2) * gr * gr
            new[k] = p - lr * (m[k] / (1 - b1**t)) / ((v[k] / (1 - b2**t)).sqrt() + eps)
        params = new
    return params


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


def lr_factor(it: int, proto: Protocol) -> float:
    start = int(proto.lr_decay_from * proto.iters)
    return 1.0 if it < start else 1.0 - (it - start) / max(1, proto.iters - start)


def _stacked(modules: list[nn.Module]) -> tuple[dict[str, torch.Tensor], Any]:
    """Independent modules of one architecture -> (stacked leaf parameters [E, ...], a function f(params, x [E, N, ...])
    that runs member e's weights on x[e])."""
    params, buffers = stack_module_state(modules)
    base = copy.deepcopy(modules[0]).to("meta")  # the architecture only; weights come from params
    batched = vmap(lambda p, b, x: functional_call(base, (p, b), (x,)))
    return params, lambda p, x: batched(p, buffers, x)


def train_ensemble(variant: str, members: list[tuple[str, int]], proto: Protocol, threads: int = 1) -> list[dict[str, Any]]:
    """Train one run per (data set, seed) member from scratch, all members vectorised as one ensemble (torch.func.vmap
    over stacked weights); returns each member's metrics, eval samples and snapshots.

    Members share nothing but the kernels: member (data, seed) is initialised under torch.manual_seed(seed) and draws
    its real samples and noise from its own generator seeded with seed, its losses are summed with the others' (so its
    gradients are its own) and Adam is elementwise, so a member trains as it would alone, up to float rounding.
    """
    if not members:
        raise ValueError("an ensemble needs at least one (data set, seed) member")
    torch.set_num_threads(threads)
    gs, ds = [], []
    for _, seed in members:
        torch.manual_seed(seed)
        g, d = build_models(variant, proto)
        gs.append(g)
        ds.append(d)
    g_params, g_fn = _stacked(gs)
    d_params, d_fn = _stacked(ds)
    g_eval = {k: v.detach().clone() for k, v in g_params.items()} if proto.ema > 0 else g_params  # scored weights
    opt_g = torch.optim.Adam(list(g_params.values()), lr=proto.lr_g, betas=proto.betas)
    opt_d = torch.optim.Adam(list(d_params.values()), lr=proto.lr_d, betas=proto.betas)
    mixes = [MIXTURES[data] for data, _ in members]
    gens = [torch.Generator().manual_seed(seed) for _, seed in members]
    scale = torch.tensor([float(np.abs(m.means_array).max()) if proto.normalize else 1.0 for m in mixes])[:, None, None]
    n, e = proto.batch, len(members)  # samples per D call and member; pacgan2 judges n // pack packs

    def real_batch() -> torch.Tensor:
        return torch.stack([sample_mixture(m, n, gen) for m, gen in zip(mixes, gens)]) / scale  # [E, n, 2]

    def noise(count: int) -> torch.Tensor:
        return torch.stack([torch.randn(count, proto.z_dim, generator=gen) for gen in gens])  # [E, count, z]

    eval_z = torch.stack([torch.randn(proto.eval_samples, proto.z_dim, generator=torch.Generator().manual_seed(10_000 + s))
                          for _, s in members])  # fmt: skip
    snap_at = sorted({round(i * proto.iters / (proto.snapshots - 1)) for i in range(proto.snapshots)})
    snapshots: list[list[dict[str, Any]]] = [[] for _ in members]
    t_start, cpu_start = time.perf_counter(), time.process_time()

    for it in range(proto.iters + 1):
        if it in snap_at:
            with torch.no_grad():
                snap = (scale * g_fn(g_eval, eval_z[:, :1000])).numpy().round(4)
            for k in range(e):
                snapshots[k].append({"iter": it, "samples": snap[k].tolist()})
        if it == proto.iters:
            break
        f = lr_factor(it, proto)
        set_lr(opt_g, proto.lr_g * f)
        set_lr(opt_d, proto.lr_d * f)

        # D step (losses: the sum of the members' means, so each member's gradient is its own)
        real = real_batch()
        with torch.no_grad():
            fake = g_fn(g_params, noise(n))
        loss_d = e * d_loss_fn(d_fn(d_params, real), d_fn(d_params, fake))
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()

        # G step
        fake = g_fn(g_params, noise(n))
        if variant == "unrolled":
            params = unrolled_d_params(d_fn, d_params, opt_d, real_batch(), fake, proto.unroll_steps)
            loss_g = e * g_loss_fn(d_fn(params, fake))
        else:
            loss_g = e * g_loss_fn(d_fn(d_params, fake))
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        if proto.ema > 0:
            torch._foreach_lerp_(list(g_eval.values()), [p.detach() for p in g_params.values()],
                                 1.0 - min(proto.ema, (1 + it) / (10 + it)))  # fmt: skip
        if not math.isfinite(loss_d.item() + loss_g.item()):
            log.warning("%s: non-finite loss at iter %d (members %s)", variant, it, members)
            break

    with torch.no_grad():
        samples = (scale * g_fn(g_eval, eval_z)).numpy()
    wall, cpu = time.perf_counter() - t_start, time.process_time() - cpu_start
    results = []
    for k, ((data, seed), mix) in enumerate(zip(members, mixes)):
        metrics = mode_metrics(samples[k], mix.means_array, mix.sigma, proto.hq_sigmas)
        results.append({"variant": variant, "data": data, "seed": seed, **metrics, "members": e,
                        "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "samples": samples[k].round(4).tolist(),
                        "snapshots": snapshots[k]})  # fmt: skip
    return results


def train_run(variant: str, data: str, seed: int, proto: Protocol, threads: int = 1) -> dict[str, Any]:
    """Train one (variant, data set, seed) from scratch: an ensemble of one."""
    return train_ensemble(variant, [(data, seed)], proto, threads)[0]


def _run_job(args: tuple[str, list[tuple[str, int]], Protocol, int]) -> list[dict[str, Any]]:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    return train_ensemble(*args)


def _log_run(r: dict[str, Any]) -> None:
    kl = "-" if r["rev_kl"] is None else f"{r['rev_kl']:.3f}"
    log.info("%-8s %s seed %d: %2d modes, HQ %5.1f%%, rev KL %s (ensemble of %d runs: %.1f s wall, %.1f s CPU)",
             r["variant"], r["data"], r["seed"], r["modes"], r["hq"], kl, r["members"], r["wall_s"], r["cpu_s"])  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------------
# Reporting


def plot_variant(variant: str, runs: dict[str, dict[str, Any]], path: Path, real_n: int = 1000) -> None:
    """Rows ring / grid, columns training snapshots (seed 0); real samples grey, generated blue, mode centres red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datas = [k for k in MIXTURES if k in runs]
    ncols = max(len(runs[k]["snapshots"]) for k in datas)
    fig, axes = plt.subplots(len(datas), ncols, figsize=(2.4 * ncols, 2.5 * len(datas)), squeeze=False)
    for row, data in zip(axes, datas):
        mix, run = MIXTURES[data], runs[data]
        real = sample_mixture(mix, real_n, torch.Generator().manual_seed(0)).numpy()
        lim = np.abs(mix.means_array).max() + 0.5 * (1.0 if data == "ring" else 2.0)
        for ax, snap in zip(row, run["snapshots"]):
            s = np.asarray(snap["samples"])
            ax.scatter(real[:, 0], real[:, 1], s=2, c="0.7", lw=0)
            ax.scatter(s[:, 0], s[:, 1], s=2, c="tab:blue", lw=0, alpha=0.6)
            ax.scatter(mix.means_array[:, 0], mix.means_array[:, 1], s=12, marker="x", c="tab:red", lw=0.8)
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{data}, iter {snap['iter']}", fontsize=8)
        for ax in row[len(run["snapshots"]) :]:
            ax.axis("off")
        last = row[len(run["snapshots"]) - 1]
        last.set_title(f"{last.get_title()}\n{run['modes']}/{len(mix.means)} modes, HQ {run['hq']:.1f}%", fontsize=8)
    fig.suptitle(f"{variant} (seed {runs[datas[0]]['seed']}): real grey, generated blue, centres red", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _cell_ours(summary: dict[str, Any], seeds: int) -> str:
    parts = []
    for key, nd in (("modes", 1), ("hq", 1), ("rev_kl", 2)):
        s = summary[key]
        cell = "-" if s["mean"] is None else f"{s['mean']:.{nd}f} ± {s['se']:.{nd}f}"
        parts.append(cell + (f" (n={s['n']})" if 0 < s["n"] < seeds else ""))  # rev KL is undefined without HQ samples
    return " / ".join(parts)


def markdown_table(summary: dict[str, dict[str, Any]], seeds: int) -> str:
    """Published rows, then one row per variant of ours (mean ± s.e. over seeds)."""
    lines = ["| source | ring modes / HQ % / rev. KL | grid modes / HQ % / rev. KL |", "|---|---|---|"]
    for name, ring, grid in PUBLISHED:
        lines.append(f"| {name} | {ring} | {grid} |")
    for variant, per_data in summary.items():
        cells = [_cell_ours(per_data[d], seeds) if d in per_data else "-" for d in ("ring", "grid")]
        lines.append(f"| ours ({seeds} seeds): {variant} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------------------------------
# Entry point


def run_benchmark(out: Path, variants: list[str], seeds: int, proto: Protocol, workers: int = 2,
                  threads: int = 1) -> dict[str, Any]:  # fmt: skip
    """Train every (variant, data set, seed), write results.json, table.md and one figure per variant into out."""
    for v in variants:
        if v not in VARIANTS:
            raise ValueError(f"unknown variant {v!r}; choose from {', '.join(VARIANTS)}")
    if seeds < 1:
        raise ValueError("--seeds must be >= 1")
    out.mkdir(parents=True, exist_ok=True)
    # one vectorised ensemble per variant and data set: every seed trained side by side
    jobs = [(v, [(d, s) for s in range(seeds)], proto, threads) for v in variants for d in MIXTURES]
    jobs.sort(key=lambda j: -COST[j[0]])  # slowest first, so that the workers finish together
    t0 = time.perf_counter()
    results: list[dict[str, Any]] = []
    if workers > 1:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(_run_job, j) for j in jobs]
            for fut in as_completed(futures):
                for r in fut.result():
                    results.append(r)
                    _log_run(r)
    else:
        for j in jobs:
            for r in train_ensemble(*j):
                results.append(r)
                _log_run(r)
    wall = time.perf_counter() - t0

    per_seed: dict[str, dict[str, list[dict[str, Any]]]] = {v: {d: [] for d in MIXTURES} for v in variants}
    for r in sorted(results, key=lambda r: (r["variant"], r["data"], r["seed"])):
        per_seed[r["variant"]][r["data"]].append(r)
    summary = {
        v: {d: {k: mean_se([r[k] for r in runs]) for k in ("modes", "hq", "rev_kl")} for d, runs in per_data.items()}
        for v, per_data in per_seed.items()
    }
    for v in variants:
        plot_variant(v, {d: per_seed[v][d][0] for d in MIXTURES}, out / f"{v}.png")

    table = markdown_table(summary, seeds)
    (out / "table.md").write_text(table)
    record = {
        "protocol": {
            **dataclasses.asdict(proto),
            "data": {k: {"means": m.means, "sigma": m.sigma, "weights": "uniform"} for k, m in MIXTURES.items()},
            "hq_rule": f"Euclidean distance to nearest mean <= {proto.hq_sigmas} sigma",
            "mode_rule": "captured if nearest mean of >= 1 high-quality sample",
            "rev_kl_rule": "log K - H(p), p = mode histogram of high-quality samples (None when no HQ sample)",
            "loss": "non-saturating GAN (softplus), one D step then one G step per iteration",
            "scaling": "networks see x / max|mean| (ring 1, grid 4); G's output is multiplied back before scoring"
            if proto.normalize
            else "raw coordinates",  # fmt: skip
            "minibatch_layers": f"mbd: MinibatchDiscrimination(A={proto.hidden}, B={proto.mbd_kernels}, "
            f"C={proto.mbd_dims}, reduce={proto.mbd_reduce!r}), group {proto.mbd_group}; "
            f"mbstd: MinibatchStdDev, group {proto.mbstd_group}; real and fake in separate D calls",
            "pacgan": f"pacgan2: each D call sees {proto.batch} samples as {proto.batch // proto.pack} packs of "
            f"{proto.pack}, all real or all fake",  # fmt: skip
            "unrolled": f"{proto.unroll_steps} differentiable Adam steps of D (lr, betas and moments of D's optimiser)",
            "eval": f"{proto.eval_samples} samples of G(z), z ~ N(0, I) drawn with seed 10000 + seed",
            "optimiser": f"Adam betas {proto.betas}, lr G {proto.lr_g}, lr D {proto.lr_d}, linear decay to 0 from "
            f"{proto.lr_decay_from:.0%} of iters",  # fmt: skip
            "generator": f"MLP z {proto.z_dim} -> {proto.layers} x (Linear {proto.hidden}, ReLU) -> Linear 2"
            + (f"; scored: EMA of its weights, decay min({proto.ema}, (1 + it) / (10 + it))" if proto.ema > 0 else ""),
            "discriminator": f"MLP 2*pack -> {proto.layers} x (Linear {proto.hidden}, LeakyReLU 0.2) -> [minibatch layer]"
            " -> Linear 1",  # fmt: skip
            "seeds": list(range(seeds)),
            "variants": variants,
            "workers": workers,
            "threads_per_worker": threads,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "wall_s": round(wall, 1),
        },
        "summary": summary,
        "runs": {
            v: {
                d: [{k: r[k] for k in ("seed", "modes", "hq", "rev_kl", "counts", "members", "wall_s", "cpu_s")}
                    for r in runs]
                for d, runs in per_data.items()
            }
            for v, per_data in per_seed.items()
        },  # fmt: skip
        "table": table,
    }
    (out / "results.json").write_text(json.dumps(record, indent=1))
    return record


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True, help="results folder")
    p.add_argument("--seeds", type=int, default=5, help="seeds 0 .. N-1 per variant and data set")
    p.add_argument("--iters", type=int, default=None, help=f"training iterations (default {Protocol.iters})")
    p.add_argument("--variants", default=",".join(DEFAULT_VARIANTS), help="comma-separated subset of " + ",".join(VARIANTS))
    p.add_argument("--quick", action="store_true", help="smoke test: 1 seed, 30 iterations, 1 process")
    p.add_argument("--workers", type=int, default=2, help="parallel processes")
    p.add_argument("--ema", type=float, default=None,
                   help=f"score an EMA of G's weights with this decay, e.g. 0.999 (default {Protocol.ema}: off)")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads per worker (2 workers x 1 thread fill 2 cores; "
        "more threads do not speed these tiny MLPs up and stall when the cores are shared)",
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    args.out.mkdir(parents=True, exist_ok=True)
    file_log = logging.FileHandler(args.out / "log.txt", mode="w")
    file_log.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    log.setLevel(logging.INFO)
    log.addHandler(file_log)

    proto = Protocol()
    seeds, workers = args.seeds, args.workers
    if args.quick:
        proto = dataclasses.replace(proto, iters=30, eval_samples=500, snapshots=2)
        seeds, workers = 1, 1
    if args.iters is not None:
        proto = dataclasses.replace(proto, iters=args.iters)
    if args.ema is not None:
        if not 0 <= args.ema < 1:
            p.error(f"--ema must be in [0, 1), got {args.ema}")
        proto = dataclasses.replace(proto, ema=args.ema)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    record = run_benchmark(args.out, variants, seeds, proto, workers, args.threads)
    print(record["table"], end="")
    # every run records its ensemble's CPU time: count each ensemble once
    cpu = sum(r["cpu_s"] / r["members"] for per_data in record["runs"].values() for runs in per_data.values() for r in runs)
    log.info("wall time %.1f s (training CPU time %.0f s over %d workers); results in %s",
             record["protocol"]["wall_s"], cpu, workers, args.out)  # fmt: skip
    log.removeHandler(file_log)
    file_log.close()


if __name__ == "__main__":
    main()
