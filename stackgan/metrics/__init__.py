"""Metrics in a registry keyed by name; `evaluate` runs several on one set of samples.

    from stackgan.metrics import available, evaluate
    result = evaluate(pipe, ["faithfulness", "diversity", "probe_fid"], "eval/mine", {"samples_per_prompt": 16})

Every metric is a function of one `EvalContext` (the generator, the options, and lazily
computed, shared material: the prompt set, K samples per prompt, real images matching each
prompt, probe readings) returning a dict with a `model` row, usually a `real` row (the same
code on real images: the ceiling) and its `protocol` (sample counts, K, seeds, resize mode,
feature extractor and its weights sha256, prompt-set version, probe accuracy), in the spirit
of clean-fid: every preprocessing choice is named and recorded.

`evaluate` writes `metrics.json`, `metrics.md` (model row + real ceiling row), `metrics.png`,
`confusion.png` (with faithfulness: what the probe reads for each named value), and appends one
JSON line to `metrics.jsonl` in `out_dir`.

The generator can be a `StackGANPipeline` or anything with the same call signature,
`gen(prompts, num_images_per_prompt=K, seed=s, output_type="pt", stage=2).images` -> uint8
`[len(prompts) * K, 3, R, R]` (prompt-major), plus `resolution` and `model_id` attributes.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MetricFn = Callable[["EvalContext"], dict[str, Any]]
CheckFn = Callable[["EvalContext"], None]
_REGISTRY: dict[str, MetricFn] = {}
_CHECKS: dict[str, CheckFn] = {}


class MetricError(ValueError):
    """A metric cannot run as asked (unknown name, missing weights, too few samples); the message says how to fix it."""


def register(name: str, check: CheckFn | None = None) -> Callable[[MetricFn], MetricFn]:
    """Decorator: `@register("faithfulness") def faithfulness(ctx) -> dict`.

    `check(ctx)` (optional) runs for every requested metric before any sample is generated and
    raises MetricError when the metric cannot run (missing weights, too few samples).
    """

    def deco(fn: MetricFn) -> MetricFn:
        if name in _REGISTRY and _REGISTRY[name] is not fn:
            raise ValueError(f"metric {name!r} is registered twice")
        _REGISTRY[name] = fn
        if check is not None:
            _CHECKS[name] = check
        return fn

    return deco


def available() -> list[str]:
    """Names of all registered metrics, sorted."""
    _load_builtins()
    return sorted(_REGISTRY)


def get_metric(name: str) -> MetricFn:
    _load_builtins()
    if name not in _REGISTRY:
        raise ValueError(f"unknown metric {name!r}; known metrics: {', '.join(available())}")
    return _REGISTRY[name]


@dataclass
class EvalOptions:
    """Everything that decides a result besides the generator (all of it is recorded).

    samples_per_prompt: K samples per prompt (>= 16 recommended; >= 2 required).
    seed:               generation seed: prompt chunk c (of `prompts_per_call` prompts) uses seed + c;
                        real images for prompt i are drawn with a rng seeded by (seed, i).
    num_prompts:        use the first N prompts of the prompt set (None = all).
    prompt_set:         path of a prompt-set JSON (None = the packaged prompts_v1.json).
    probe_dir:          probe folder (None = the packaged stackgan/assets/probe).
    stage:              pipeline stage to evaluate (1 or 2).
    prompts_per_call:   prompts per generator call (batching; part of the seed protocol).
    real_pool_size:     size of the shapes test split searched for images matching each prompt.
    fid_min_factor:     FID-type metrics refuse fewer than factor x feature-dim samples per side.
    inception_weights:  local FID Inception weights (weights-inception-2015-12-05-6726825d.pth) for fid/kid/inception_score.
    clip_model / clip_weights: open_clip model name (or local-dir:/path) and local weights, for clip_* metrics.
    lpips_net / lpips_weights: LPIPS backbone ("alex" or "vgg") and its local torchvision ImageNet weights.
    feature_space:      feature_diversity's space: "probe", "clip" or "inception".
    r_precision_candidates: candidates per image for clip_r_precision (1 true + up to R-1 contradicting prompts).
    candidates / diversity: the pipeline's sampling: candidates drawn per kept sample, ranked by the
                        model's own image tower (`StackGANPipeline` arguments; 1 = plain sampling).
    sampling_from:      where candidates / diversity came from, for the protocol (`stackgan eval`
                        fills it: the model's own declared sampling or the command line).
    """

    samples_per_prompt: int = 16
    seed: int = 0
    num_prompts: int | None = None
    prompt_set: str | None = None
    probe_dir: str | None = None
    stage: int = 2
    prompts_per_call: int = 16
    real_pool_size: int = 20000
    fid_min_factor: float = 2.0
    inception_weights: str | None = None
    clip_model: str | None = None
    clip_weights: str | None = None
    lpips_net: str = "alex"
    lpips_weights: str | None = None
    feature_space: str = "probe"
    r_precision_candidates: int = 100
    candidates: int = 1
    diversity: float = 0.5
    sampling_from: str = "options"
    extra: dict[str, Any] = field(default_factory=dict)  # test hooks, e.g. a custom inception feature module

    @classmethod
    def from_any(cls, options: "EvalOptions | dict[str, Any] | None") -> "EvalOptions":
        if options is None:
            return cls()
        if isinstance(options, cls):
            return options
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise MetricError(f"unknown evaluation option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**options)

    def validate(self) -> None:
        if not isinstance(self.samples_per_prompt, int) or not 2 <= self.samples_per_prompt <= 256:
            raise MetricError(f"samples_per_prompt must be an integer in [2, 256], got {self.samples_per_prompt!r}")
        if self.num_prompts is not None and self.num_prompts < 1:
            raise MetricError(f"num_prompts must be >= 1, got {self.num_prompts}")
        if self.stage not in (1, 2):
            raise MetricError(f"stage must be 1 or 2, got {self.stage!r}")
        if self.feature_space not in ("probe", "clip", "inception"):
            raise MetricError(f"feature_space must be probe, clip or inception, got {self.feature_space!r}")
        if self.r_precision_candidates < 2:
            raise MetricError(f"r_precision_candidates must be >= 2, got {self.r_precision_candidates}")
        from ..pipeline import MAX_CANDIDATES

        if not isinstance(self.candidates, int) or not 1 <= self.candidates <= MAX_CANDIDATES:
            raise MetricError(f"candidates must be an integer in [1, {MAX_CANDIDATES}], got {self.candidates!r}")
        if not 0 <= self.diversity <= 4:
            raise MetricError(f"diversity must be in [0, 4], got {self.diversity}")

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        d["extra"] = sorted(self.extra)  # modules are not JSON (nor worth a deep copy); record which hooks were used
        return d


class EvalContext:
    """Shared, lazily computed material for the metrics of one evaluation.

    Args:
        generator: a StackGANPipeline (or the same call signature, see the module docstring).
        options:   EvalOptions.
        out_dir:   where results go (metrics may write extra files there).
    """

    def __init__(self, generator: Any, options: EvalOptions, out_dir: Path | None = None):
        self.generator, self.options, self.out_dir = generator, options, out_dir
        self.cache: dict[str, Any] = {}

    def cached(self, key: str, make: Callable[[], Any]) -> Any:
        if key not in self.cache:
            t = time.time()
            self.cache[key] = make()
            log.info("%s ready (%.1f s)", key, time.time() - t)
        return self.cache[key]

    @property
    def resolution(self) -> int:
        """Resolution of the evaluated images (stage I's when options.stage == 1)."""
        stage1 = getattr(self.generator, "stage1", None)
        if self.options.stage == 1 and stage1 is not None:
            return int(stage1.resolution)
        return int(self.generator.resolution)

    @property
    def model_id(self) -> str:
        return str(getattr(self.generator, "model_id", type(self.generator).__name__))


def evaluate(pipe: Any, names: list[str] | str, out_dir: str | Path | None = None,
             options: EvalOptions | dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the named metrics on one set of samples; write metrics.json/.md/.png (+ .jsonl line, and confusion.png with
    faithfulness) when out_dir is given.

    Returns {"model_id", "metrics": {name: result}, "options", "seconds", "table"}.
    Raises ValueError (MetricError) for unknown names, missing weights or too few samples, before generating.
    """
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    if not names:
        raise MetricError(f"no metric named; known metrics: {', '.join(available())}")
    fns = {n: get_metric(n) for n in dict.fromkeys(names)}
    opts = EvalOptions.from_any(options)
    opts.validate()
    out = Path(out_dir) if out_dir is not None else None
    ctx = EvalContext(pipe, opts, out)
    for name in fns:  # weights present, sample counts large enough: fail before minutes of generation
        if name in _CHECKS:
            _CHECKS[name](ctx)
    start = time.time()
    results = {}
    for name, fn in fns.items():
        t = time.time()
        results[name] = fn(ctx)
        results[name]["seconds"] = round(time.time() - t, 2)
        log.info("metric %s done (%.1f s)", name, time.time() - t)
    report = {"model_id": ctx.model_id, "metrics": results, "options": opts.to_dict(),
              "seconds": round(time.time() - start, 1)}
    report["table"] = render_table(report)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(report, indent=2, default=_json_default) + "\n", encoding="utf-8")
        (out / "metrics.md").write_text(render_markdown(report), encoding="utf-8")
        render_figure(report, out / "metrics.png")
        render_confusion(report, out / "confusion.png")
        with open(out / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps({k: v for k, v in report.items() if k != "table"}, default=_json_default) + "\n")
    return report


def _json_default(o: Any) -> Any:
    import torch

    if isinstance(o, torch.Tensor):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# ---------------------------------------------------------------------------------------------- reports
REAL_ROW = "real images (ceiling)"


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 10 else f"{v:.2f}"
    return str(v)


def table_columns(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Column label -> {"model": value, "real": value}, in metric order."""
    cols: dict[str, dict[str, Any]] = {}
    for res in report["metrics"].values():
        cols.update(res.get("table", {}))
    return cols


def render_table(report: dict[str, Any]) -> str:
    """The main markdown table: one row for the model, one for real images run through the same code."""
    cols = table_columns(report)
    head = "| | " + " | ".join(cols) + " |"
    sep = "|---|" + "---:|" * len(cols)
    rows = [f"| {report['model_id']} | " + " | ".join(_fmt(c.get("model")) for c in cols.values()) + " |",
            f"| {REAL_ROW} | " + " | ".join(_fmt(c.get("real")) for c in cols.values()) + " |"]
    return "\n".join([head, sep, *rows])


def _per_attribute_table(report: dict[str, Any]) -> str:
    from ..data.shapes import ATTRIBUTES

    m = report["metrics"]
    any_res = next(iter(m.values()))
    acc = (any_res.get("protocol", {}).get("probe") or {}).get("test_accuracy") or {}
    head = ["attribute", "probe test acc."]
    if "faithfulness" in m:
        head += ["faithfulness (model)", "faithfulness (real)"]
    if "diversity" in m:
        head += ["coverage (model)", "coverage (real)", "entropy (model)", "entropy (real)"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for a in ATTRIBUTES:
        row = [a, _fmt(acc.get(a))]
        if "faithfulness" in m:
            row += [_fmt(m["faithfulness"][r]["per_attribute"][a]) for r in ("model", "real")]
        if "diversity" in m:
            for key in ("coverage", "entropy"):
                row += [_fmt(m["diversity"][r]["per_attribute"][a][key]) for r in ("model", "real")]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _confusion_tables(faith: dict[str, Any], model_id: str, below: float = 0.95) -> list[str]:
    """Markdown confusion tables (share of each named value's samples read as each value) for the attributes the
    model gets right less than `below` of the time; all five are in confusion.png."""
    out = []
    for a, c in faith["confusion"].items():
        score = faith["per_attribute"].get(a)
        if score is None or score >= below:
            continue
        vals, counts = c["values"], c["counts"]
        out += [f"{a}: what the probe reads on {model_id}'s samples of prompts naming each {a} "
                f"(share of the row; {sum(map(sum, counts))} readings):", "",
                "| named \\ read | " + " | ".join(vals) + " |", "|---|" + "---:|" * len(vals)]
        for v, row in zip(vals, counts):
            n = sum(row)
            out.append(f"| {v} | " + " | ".join(f"{x / n:.2f}" if n else "-" for x in row) + " |")
        out.append("")
    return out


def render_confusion(report: dict[str, Any], path: str | Path) -> Path | None:
    """confusion.png: per attribute, what the probe reads (columns) on samples of prompts naming each value (rows),
    as shares of the row; None when the report has no faithfulness result."""
    faith = report["metrics"].get("faithfulness", {}).get("model", {})
    if "confusion" not in faith:
        return None
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conf = faith["confusion"]
    fig, axes = plt.subplots(1, len(conf), figsize=(3.3 * len(conf), 4.0), squeeze=False)
    for ax, (a, c) in zip(axes[0], conf.items()):
        counts = np.asarray(c["counts"], dtype=float)
        share = counts / np.maximum(counts.sum(1, keepdims=True), 1)
        ax.imshow(share, vmin=0, vmax=1, cmap="Blues")
        ticks = range(len(c["values"]))
        ax.set_xticks(ticks, c["values"], rotation=60, fontsize=6)
        ax.set_yticks(ticks, c["values"], fontsize=6)
        ax.set_xlabel("read by the probe", fontsize=7)
        ax.set_ylabel("named in the prompt", fontsize=7)
        score = faith["per_attribute"].get(a)
        ax.set_title(f"{a} ({score:.2f} right)" if score is not None else a, fontsize=9)
        if len(c["values"]) <= 10:
            for i in ticks:
                for j in ticks:
                    if share[i, j] >= 0.05:
                        ax.text(j, i, f"{share[i, j]:.2f}", ha="center", va="center", fontsize=5,
                                color="white" if share[i, j] > 0.6 else "black")
    return _save_figure(fig, f"{report['model_id']}: attributes named vs read ({_protocol_line(report)})", path)


def render_markdown(report: dict[str, Any]) -> str:
    """metrics.md: the main table, per-attribute detail, what each column means, and the protocol."""
    m = report["metrics"]
    first = next(iter(m.values()))
    proto = first.get("protocol", {})
    out = [f"# Evaluation of {report['model_id']}", "", render_table(report), ""]
    if "faithfulness" in m or "diversity" in m:
        out += ["Per attribute (diversity: over prompts that leave the attribute unnamed):", "", _per_attribute_table(report), ""]
    if "confusion" in m.get("faithfulness", {}).get("model", {}):
        out += _confusion_tables(m["faithfulness"]["model"], report["model_id"])
    out += ["Columns:", ""]
    for name, res in m.items():
        out.append(f"- `{name}`: {res.get('label', name)}")
    probe = proto.get("probe") or {}
    ps = proto.get("prompt_set") or {}
    out += ["", "Protocol:", "",
            f"- prompt set {ps.get('version')} (sha256 {str(ps.get('sha256'))[:12]}...), {ps.get('num_prompts')} of "
            f"{ps.get('of')} prompts, K = {proto.get('samples_per_prompt')} samples per prompt "
            f"({proto.get('num_samples')} samples), seed {proto.get('seed')}: {proto.get('seed_rule')}; stage {proto.get('stage')}",
            f"- model {proto.get('model_id')} at {proto.get('model_resolution')} px; resize before the probe: "
            f"{proto.get('resize_mode')}; sampling: " + (
                "plain" if not isinstance(proto.get("sampling"), dict) else
                f"{proto['sampling']['candidates']} candidates per kept sample, diversity {proto['sampling']['diversity']} "
                "(ranked by the model's own image tower)") + (
                f"; set by {proto['sampling_from']}" if proto.get("sampling_from") else ""),
            f"- probe {probe.get('version')} (weights sha256 {str(probe.get('weights_sha256'))[:12]}...), held-out accuracy "
            + ", ".join(f"{k} {v:.4f}" for k, v in (probe.get("test_accuracy") or {}).items()),
            ]
    if proto.get("real_images"):
        ri = proto["real_images"]
        out.append(f"- real images: {ri['source']}; {ri['from_pool']} from the pool, {ri['rendered_conditionally']} rendered")
    for name, res in m.items():
        fe = res.get("protocol", {}).get("feature_extractor")
        if fe:
            out.append(f"- `{name}` features: {fe.get('name')} (sha256 {str(fe.get('weights_sha256'))[:12]}...)")
    out += [f"- versions: {proto.get('versions')}", f"- wall time {report.get('seconds')} s", ""]
    return "\n".join(out)


def _protocol_line(report: dict[str, Any]) -> str:
    proto = next(iter(report["metrics"].values())).get("protocol", {})
    return (f"{(proto.get('prompt_set') or {}).get('num_prompts')} prompts x K={proto.get('samples_per_prompt')}, "
            f"seed {proto.get('seed')}, {proto.get('model_resolution')} px")


def render_figure(report: dict[str, Any], path: str | Path) -> Path:
    """metrics.png: per-attribute faithfulness / coverage / entropy bars (model vs real), then one small panel per other column."""
    import matplotlib
    import matplotlib.patches
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..data.shapes import ATTRIBUTES

    m = report["metrics"]
    panels: list[tuple[str, list[str], list[Any], list[Any]]] = []
    attrs = list(ATTRIBUTES)
    if "faithfulness" in m:
        panels.append(("faithfulness", attrs, [m["faithfulness"]["model"]["per_attribute"][a] for a in attrs],
                       [m["faithfulness"]["real"]["per_attribute"][a] for a in attrs]))
    if "diversity" in m:
        for key in ("coverage", "entropy"):
            panels.append((f"diversity: {key}", attrs, [m["diversity"]["model"]["per_attribute"][a][key] for a in attrs],
                           [m["diversity"]["real"]["per_attribute"][a][key] for a in attrs]))
    shown = {"faithfulness", "all named right", "coverage", "entropy"}
    for label, c in table_columns(report).items():
        if label not in shown:
            panels.append((label, [""], [c.get("model")], [c.get("real")]))
    fig, axes = plt.subplots(1, len(panels), figsize=(max(4.0, 3.4 * len(panels)), 3.4), squeeze=False)
    colours = ("#d95f02", "#7570b3")
    for ax, (title, labels, model, real) in zip(axes[0], panels):
        mv = [np.nan if v is None else float(v) for v in model]
        rv = [np.nan if v is None else float(v) for v in real]
        if len(labels) > 1:  # per attribute: grouped bars on a 0-1 scale
            x = np.arange(len(labels))
            ax.bar(x - 0.2, mv, 0.4, color=colours[0])
            ax.bar(x + 0.2, rv, 0.4, color=colours[1])
            ax.set_xticks(x, labels, rotation=30, fontsize=8)
            ax.set_ylim(0, 1.05)
        else:  # one number per row
            bars = ax.bar([0, 1], [mv[0], rv[0]], 0.6, color=colours)
            ax.set_xticks([0, 1], ["model", "real"], fontsize=8)
            for b, v in zip(bars, (mv[0], rv[0])):
                if np.isfinite(v):
                    ax.annotate(_fmt(v), (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom", fontsize=8)
        ax.set_title(title, fontsize=9)
    handles = [matplotlib.patches.Patch(color=c) for c in colours]
    fig.legend(handles, [report["model_id"], REAL_ROW], loc="upper right", fontsize=8, ncol=2, frameon=False)
    return _save_figure(fig, f"{report['model_id']} vs real images ({_protocol_line(report)})", path)


def _save_figure(fig: Any, title: str, path: str | Path) -> Path:
    """Title the figure at the top left, lay it out, save it as a PNG and close it."""
    import matplotlib.pyplot as plt

    fig.suptitle(title, fontsize=9, x=0.01, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


_builtins_loaded = False


def _load_builtins() -> None:
    """Import the built-in metric modules (they register themselves); lazy so `stackgan --help` stays fast."""
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True
        from . import shapes_bench, standard  # noqa: F401
