"""`stackgan eval`: run registered metrics on a model and write metrics.json / metrics.md / metrics.png.

    stackgan eval --model default --metrics faithfulness,diversity,probe_fid --out eval/default
    stackgan eval --model runs/x/pipeline --metrics fid,kid --inception-weights ~/weights/weights-inception-2015-12-05-6726825d.pth --out eval/x
    stackgan eval --list                                                        # the metric names
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

DEFAULT_METRICS = "faithfulness,diversity,probe_fid"


def add_eval_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `eval` subcommand to a `stackgan` argparse subparsers object."""
    p = subparsers.add_parser("eval", help="measure quality and mode collapse (shapes benchmark, FID, CLIP score, ...)",
                              description="Generate K samples for each prompt of a fixed prompt set and score them; "
                                          "real images matching each prompt go through the same code (the ceiling row).")
    p.add_argument("--model", default="default", help="pipeline folder, or 'default' for the bundled model")
    p.add_argument("--metrics", default=DEFAULT_METRICS, help=f"comma-separated metric names (default {DEFAULT_METRICS})")
    p.add_argument("--out", help="output folder for metrics.json, metrics.md, metrics.png (and metrics.jsonl)")
    p.add_argument("--samples-per-prompt", type=int, default=16, help="K samples per prompt (default 16)")
    p.add_argument("--seed", type=int, default=0, help="generation seed (call c of 16 prompts uses seed + c)")
    p.add_argument("--num-prompts", type=int, default=None, help="use only the first N prompts (quick checks)")
    p.add_argument("--prompt-set", default=None, help="prompt-set JSON (default: the packaged prompts_v1.json)")
    p.add_argument("--probe", default=None, help="probe folder (default: the packaged stackgan/assets/probe)")
    p.add_argument("--stage", type=int, choices=(1, 2), default=2)
    p.add_argument("--candidates", type=int, default=None,
                   help="sample with this many candidates per kept image, ranked by the model's image tower (1: plain; "
                        "default: the sampling the model declares in model_index.json, as stackgan generate and the "
                        "app use it: 4 for the bundled model; plain for a model that declares none)")
    p.add_argument("--diversity", type=float, default=None,
                   help="with --candidates > 1: the pipeline's diversity weight (default: the model's, else 0.5)")
    p.add_argument("--inception-weights", default=None, help="FID Inception weights file (fid, kid, inception_score)")
    p.add_argument("--clip-model", default=None, help="open_clip model name or local-dir:/folder (clip_* metrics)")
    p.add_argument("--clip-weights", default=None, help="local open_clip weights file for --clip-model")
    p.add_argument("--lpips-net", default="alex", choices=("alex", "vgg"))
    p.add_argument("--lpips-weights", default=None, help="torchvision ImageNet weights of the LPIPS backbone")
    p.add_argument("--feature-space", default="probe", choices=("probe", "clip", "inception"),
                   help="feature space of feature_diversity")
    p.add_argument("--list", action="store_true", help="list the metric names and exit")
    p.set_defaults(func=run_eval)
    return p


def run_eval(args: argparse.Namespace) -> int:
    from . import MetricError, available, evaluate

    if args.list:
        print("\n".join(available()))
        return 0
    if not args.out:
        print("error: --out DIR is required (metrics.json, metrics.md and metrics.png go there)", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("PIL", "matplotlib", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    names = [n.strip() for n in args.metrics.split(",") if n.strip()]
    options = {"samples_per_prompt": args.samples_per_prompt, "seed": args.seed, "num_prompts": args.num_prompts,
               "prompt_set": args.prompt_set, "probe_dir": args.probe, "stage": args.stage,
               "inception_weights": args.inception_weights, "clip_model": args.clip_model, "clip_weights": args.clip_weights,
               "lpips_net": args.lpips_net, "lpips_weights": args.lpips_weights, "feature_space": args.feature_space,
               "candidates": 1 if args.candidates is None else args.candidates,
               "diversity": 0.5 if args.diversity is None else args.diversity}
    from ..cli import choose_sampling
    from ..pipeline import PipelineError, StackGANPipeline

    start = time.time()
    try:
        from . import EvalOptions, get_metric

        for n in names:  # unknown names fail before the model loads
            get_metric(n)
        EvalOptions.from_any(options).validate()
        pipe = StackGANPipeline.from_pretrained(args.model)
        options["sampling_from"] = choose_sampling(pipe, args.candidates, args.diversity)
        options.update(candidates=pipe.candidates, diversity=pipe.diversity)
        report = evaluate(pipe, names, args.out, options)
    except (MetricError, PipelineError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report["table"])
    print(f"\n{args.out}/metrics.json, metrics.md, metrics.png written in {time.time() - start:.0f} s")
    return 0
