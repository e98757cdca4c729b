"""Anti-collapse ablation on `shapes`: `python -m benchmarks.ablation_shapes --out DIR [--steps N]`.

Trains the same config with the same seed once per discriminator variant (minibatch
discrimination off, on over the whole batch, on within per-caption groups, minibatch stddev,
and the mode-seeking term of Mao et al. 2019), runs `stackgan eval` (faithfulness, per-prompt
coverage and entropy, probe-FID) on each, and writes DIR/ablation.json, DIR/ablation.md (one
table, the real-image ceiling included) and DIR/ablation.png (the metrics side by side plus
each variant's final sample grid). Each variant is its own run folder: an interrupted ablation
continues where it stopped (finished runs and evaluations are reused, others resume).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import write_json

ROOT = Path(__file__).resolve().parents[1]

# name -> (description, config overrides). Both discriminators get the same layer.
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "none": ("no minibatch layer", ["model.d1_minibatch=none", "model.d2_minibatch=none"]),
    "mbd_batch": ("minibatch discrimination, whole batch",
                  ["model.d1_minibatch=mbd", "model.d2_minibatch=mbd", "model.mbd_scope=batch"]),
    "mbd_group": ("minibatch discrimination, per-caption groups",
                  ["model.d1_minibatch=mbd", "model.d2_minibatch=mbd", "model.mbd_scope=group"]),
    "mbstd": ("minibatch stddev, per-caption groups",
              ["model.d1_minibatch=mbstd", "model.d2_minibatch=mbstd", "model.mbd_scope=group"]),
    "mode_seeking": ("mode-seeking term (weight 1), no minibatch layer",
                     ["model.d1_minibatch=none", "model.d2_minibatch=none", "train.mode_seeking=1.0"]),
}
COLUMNS = [("faithfulness", "faithfulness"), ("all named right", "faithfulness"), ("coverage", "diversity"),
           ("entropy", "diversity"), ("probe-FID", "probe_fid")]


def _run(cmd: list[str], log: Path) -> None:
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        done = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise SystemExit(f"command failed ({done.returncode}); see {log}: {' '.join(cmd)}")


def run_variant(name: str, out: Path, args: argparse.Namespace) -> dict:
    run = out / name
    stages = "[1]" if args.stage == 1 else "[1,2]"
    overrides = [f"train.stages={stages}", f"train.max_steps={args.steps}", f"train.stage2_steps={args.stage2_steps}",
                 f"train.snapshot_every={args.steps}", f"train.checkpoint_every={max(args.steps // 4, 1)}",
                 *VARIANTS[name][1], *args.override]
    t0 = time.time()
    if not (run / "pipeline" / "model_index.json").exists():
        run.mkdir(parents=True, exist_ok=True)
        resume = ["--resume", "latest"] if (run / "checkpoints").exists() else []
        _run([sys.executable, "train.py", "--config", args.config, "--output-dir", str(run), *resume, *overrides],
             out / f"{name}.log")
    train_s = time.time() - t0
    if not (run / "eval" / "metrics.json").exists():
        cmd = [sys.executable, "-m", "stackgan.cli", "eval", "--model", str(run / "pipeline"), "--stage", str(args.stage),
               "--metrics", args.metrics, "--out", str(run / "eval")]
        if args.num_prompts:
            cmd += ["--num-prompts", str(args.num_prompts)]
        _run(cmd, out / f"{name}.log")
    metrics = json.loads((run / "eval" / "metrics.json").read_text(encoding="utf-8"))
    row = {"variant": name, "description": VARIANTS[name][0], "overrides": overrides, "train_s_this_call": train_s}
    real = {}
    for col, metric in COLUMNS:
        if metric not in metrics["metrics"]:
            continue
        cell = metrics["metrics"][metric]["table"][col]
        row[col], real[col] = cell["model"], cell["real"]
    grids = sorted((run / "samples").glob(f"stage{args.stage}-step*.png"))
    row["grid"] = str(grids[-1].relative_to(out)) if grids else None
    row["real"] = real
    row["protocol"] = metrics["options"]
    return row


def _columns(rows: list[dict]) -> list[str]:
    return [c for c, _ in COLUMNS if rows and c in rows[0]]


def to_markdown(rows: list[dict], meta: dict) -> str:
    cols = _columns(rows)
    head = "| variant | " + " | ".join(cols) + " |"
    lines = [f"Config `{meta['config']}`, stage {meta['stage']}, {meta['steps']} steps"
             + (f" + stage II {meta['stage2_steps']}" if meta["stage"] == 2 else "")
             + f", seed 0, overrides {meta['override'] or 'none'}; {meta['num_prompts'] or 240} prompts x 16 samples.",
             "", head, "|---|" + "---:|" * len(cols)]
    for r in rows:
        lines.append(f"| {r['description']} (`{r['variant']}`) | " + " | ".join(_cell(r[c], c) for c in cols) + " |")
    if rows:
        lines.append("| real images (ceiling) | " + " | ".join(_cell(rows[0]["real"][c], c) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def _cell(v: float, col: str) -> str:
    return f"{v:.1f}" if col == "probe-FID" else f"{v:.3f}"


def figure(rows: list[dict], out: Path, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    n = len(rows)
    fig = plt.figure(figsize=(4 + 3 * n, 7.5))
    ax = fig.add_subplot(2, 1, 1)
    cols = [c for c in _columns(rows) if c != "probe-FID"]
    width = 0.8 / n
    for i, r in enumerate(rows):
        ax.bar([j + i * width for j in range(len(cols))], [r[c] for c in cols], width, label=r["variant"])
    ax.scatter([j + 0.4 - width / 2 for j in range(len(cols))], [rows[0]["real"][c] for c in cols], marker="_", s=600,
               color="black", label="real (ceiling)", zorder=3)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(cols))], cols)
    ax.set_ylim(0, 1.05)
    ax.legend(ncol=n + 1, fontsize=8, loc="upper right")
    fid = ", ".join(f"{r['variant']} {r['probe-FID']:.0f}" for r in rows if "probe-FID" in r)
    ax.set_title("shapes ablation" + (f" (probe-FID: {fid})" if fid else ""), fontsize=9)
    for i, r in enumerate(rows):
        a = fig.add_subplot(2, n, n + i + 1)
        if r["grid"]:
            a.imshow(Image.open(out / r["grid"]).convert("RGB"))
        a.set_title(r["variant"], fontsize=9)
        a.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ablation_shapes", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--config", default="configs/shapes.yaml")
    p.add_argument("--steps", type=int, default=1000, help="stage I steps per variant (default 1000)")
    p.add_argument("--stage", type=int, choices=(1, 2), default=1, help="train and evaluate up to this stage")
    p.add_argument("--stage2-steps", type=int, default=500)
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, among {', '.join(VARIANTS)}")
    p.add_argument("--num-prompts", type=int, default=None, help="evaluate on the first N prompts only")
    p.add_argument("--metrics", default="faithfulness,diversity,probe_fid", help="stackgan eval metrics to run")
    p.add_argument("override", nargs="*", help="extra config overrides for every variant (key=value)")
    args = p.parse_args(argv)
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"config": args.config, "stage": args.stage, "steps": args.steps, "stage2_steps": args.stage2_steps,
            "override": args.override, "num_prompts": args.num_prompts, "metrics": args.metrics}
    rows = []
    for name in names:
        print(f"[{name}] {VARIANTS[name][0]}", flush=True)
        rows.append(run_variant(name, out, args))
        r = rows[-1]
        print("   " + ", ".join(f"{c} {_cell(r[c], c)}" for c in _columns([r])), flush=True)
    write_json(out / "ablation.json", {"meta": meta, "rows": rows})
    md = to_markdown(rows, meta)
    (out / "ablation.md").write_text(md, encoding="utf-8")
    figure(rows, out, out / "ablation.png")
    print(md)
    print(f"wrote {out / 'ablation.json'}, ablation.md, ablation.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
