"""Command-line entry points: `stackgan train|train-text|generate|app|data|eval ...` (thin wrappers)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from . import env  # noqa: F401


def add_sampling_args(p: argparse.ArgumentParser, fallback: int) -> None:
    """--candidates / --diversity: the pipeline's candidate sampling (`StackGANPipeline.set_sampling`);
    left out, the model's own (`choose_sampling`)."""
    from .pipeline import MAX_CANDIDATES

    p.add_argument("--candidates", type=int, default=None,
                   help=f"draw this many candidates per image and keep those the model's image tower matches best with "
                        f"the caption, passing over near-copies (1-{MAX_CANDIDATES}; 1: plain sampling; default: the "
                        f"sampling the model declares in model_index.json, 4 for the bundled model; {fallback} for a "
                        "model that declares none)")
    p.add_argument("--diversity", type=float, default=None,
                   help="with --candidates > 1: how much likeness to a kept image counts against a candidate "
                        "(0-4; default: the model's, else 0.5)")


def choose_sampling(pipe, candidates: int | None, diversity: float | None, fallback: int = 1) -> str:
    """Set `pipe`'s sampling from --candidates / --diversity; what is left out comes from the sampling
    the model declares (`pipe.recommended_sampling`), else `fallback` candidates (1 where the text
    encoder has no image tower to rank them) and diversity 0.5. Returns where the setting came from."""
    own = pipe.recommended_sampling
    if own is None and not pipe.text_encoder.has_image_tower:
        fallback = 1
    base = own or {"candidates": fallback, "diversity": 0.5}
    pipe.set_sampling(base["candidates"] if candidates is None else candidates,
                      base["diversity"] if diversity is None else diversity)
    if candidates is not None and diversity is not None:
        return "the command line"
    return ("the model, model_index.json info.sampling" if own else "the default for models that declare none") + (
        "" if candidates is None and diversity is None else ", with the command line's")


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "PIL", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


# ------------------------------------------------------------------ train
def add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML preset, e.g. configs/shapes.yaml")
    p.add_argument("--output-dir", help="run folder (config, logs, samples, checkpoints, pipeline)")
    p.add_argument("--resume", help="'latest' or a checkpoint folder")
    p.add_argument("--init-from", help="pipeline folder to fine-tune ('default' = the bundled model)")
    p.add_argument("--freeze-stage1", action="store_true", help="with --init-from: keep its stage I, train stage II")
    p.add_argument("--reinit-text-projection", action="store_true",
                   help="with --init-from and a text encoder of another embedding size: re-initialise the "
                        "generators' text projections, keep the rest")
    p.add_argument("--data", help="shortcut for data.name=folder data.path=PATH")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.max_steps=50")


def train_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="train.py", description="Train a two-stage StackGAN.")
    add_train_args(parser)
    return run_train(parser.parse_intermixed_args(argv))


def run_train(args: argparse.Namespace) -> int:
    from .config import ConfigError, dump_config, load_config

    overrides = list(args.overrides)
    if args.data:
        overrides = ["data.name=folder", f"data.path={args.data}", *overrides]
    try:
        cfg = load_config(args.config, overrides)
    except ConfigError as e:
        return _fail(str(e))
    if args.dry_run:
        print(dump_config(cfg), end="")
        return 0
    if not args.output_dir:
        return _fail("--output-dir is required (the run folder)")
    _setup_logging()
    from .pipeline import PipelineError
    from .text.encoder import TextEncoderError
    from .training.checkpoint import CheckpointError
    from .training.loop import TrainingDiverged, train

    try:
        path = train(cfg, args.output_dir, resume=args.resume, init_from=args.init_from, freeze_stage1=args.freeze_stage1,
                     reinit_text_projection=args.reinit_text_projection)
    except (ConfigError, CheckpointError, PipelineError, TextEncoderError, TrainingDiverged) as e:
        return _fail(str(e))
    print(f"pipeline written to {path}")
    return 0


# ------------------------------------------------------------------ train-text
def run_train_text(args: argparse.Namespace) -> int:
    import json

    from .config import ConfigError, load_config
    from .data import build_dataset
    from .text.train import attribute_readout, caption_retrieval, train_text_encoder

    _setup_logging()
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as e:
        return _fail(str(e))
    import torch

    from .training.loop import caption_embeddings

    ds = build_dataset(cfg.data, "train")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    enc = train_text_encoder(ds, cfg.text.model, cfg.text.train_steps or 1000, cfg.text.train_batch_size,
                             cfg.text.train_lr, cfg.train.seed, args.output_dir, device=device,
                             group_by=cfg.text.train_group_by)
    if cfg.data.name == "shapes":
        test = build_dataset(cfg.data, "test")
        res = {**caption_retrieval(enc, test), "attributes": attribute_readout(enc, test)}
        (Path(args.output_dir) / "retrieval.json").write_text(json.dumps(res, indent=2), encoding="utf-8")
        print(json.dumps(res))
    caption_embeddings(cfg, enc, ds)  # fill the embedding cache that training reads
    print(f"text encoder written to {args.output_dir} (load with text.model=local-dir:{args.output_dir})")
    return 0


# ------------------------------------------------------------------ generate
def run_generate(args: argparse.Namespace) -> int:
    from .generate import generate_to_folder
    from .pipeline import PipelineError, StackGANPipeline
    from .prompts import PromptFileError, parse_prompts, read_prompt_file

    if bool(args.prompts) == bool(args.prompt):
        return _fail("give exactly one of --prompts FILE or --prompt 'a caption'")
    try:
        prompts = read_prompt_file(args.prompts) if args.prompts else parse_prompts(args.prompt, "--prompt")
        if not prompts:
            raise PromptFileError("--prompt is empty; describe the image, e.g. --prompt 'a red circle'")
        if not 1 <= args.num_images <= 256:
            raise PromptFileError(f"--num-images must be in [1, 256], got {args.num_images}")
        pipe = StackGANPipeline.from_pretrained(args.model)
        if args.precision != "fp32":
            pipe.optimize(precision=args.precision)
        choose_sampling(pipe, args.candidates, args.diversity)
        manifest = generate_to_folder(pipe, prompts, args.out, args.num_images, args.seed, args.stage, args.noise_scale,
                                      args.truncation)
    except (PromptFileError, PipelineError) as e:
        return _fail(str(e))
    print(f"{len(prompts)} prompt(s) x {args.num_images} images written to {args.out} (manifest: {manifest})")
    return 0


# ------------------------------------------------------------------ app
def run_app(args: argparse.Namespace) -> int:
    from app.main import run

    return run(args)


# ------------------------------------------------------------------ data inspect
def run_data_inspect(args: argparse.Namespace) -> int:
    from .data.inspect import format_report, inspect_dataset

    try:
        report = inspect_dataset(args.path, format=args.format, out_dir=args.out)
    except (ValueError, FileNotFoundError) as e:
        return _fail(str(e))
    print(format_report(report))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["train"]:  # overrides may come before or after options (argparse subparsers can't intermix)
        return train_main(argv[1:])
    parser = argparse.ArgumentParser(prog="stackgan", description="Text-to-image StackGAN toolkit.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model (same as python train.py)")
    add_train_args(p)
    p.set_defaults(func=run_train)

    p = sub.add_parser("train-text", help="train a small open_clip text encoder on a data set")
    p.add_argument("--config", default=None)
    p.add_argument("--output-dir", required=True)
    p.add_argument("overrides", nargs="*")
    p.set_defaults(func=run_train_text)

    from .pipeline import PRECISIONS

    p = sub.add_parser("generate", help="generate images for prompts into a folder")
    p.add_argument("--prompts", help="UTF-8 file, one prompt per line (# comments and blank lines skipped)")
    p.add_argument("--prompt", help="one caption")
    p.add_argument("--num-images", type=int, default=8, help="images per prompt (1-256)")
    p.add_argument("--seed", type=int, default=0, help="prompt k uses seed + k")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--model", default=None, help="pipeline folder (default: the bundled shapes model)")
    p.add_argument("--stage", type=int, choices=(1, 2), default=2)
    p.add_argument("--noise-scale", type=float, default=1.0, help="< 1: safer, less varied samples")
    p.add_argument("--truncation", type=float, default=None, help="truncate noise at this |z| (e.g. 1.5)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="fp32 (default): the saved float32 generators as they are, the same pixels on every CPU; "
                        "auto / bf16-stage2 / bf16: the optimised path (pipe.optimize); auto = bf16-stage2 (stage I "
                        "in float32, stage II in bf16) where the hardware has native bf16 units, about 2 x faster "
                        "there and within about 0.01/255 per pixel; bf16: both stages, faster, 0.14/255")
    add_sampling_args(p, fallback=1)
    p.set_defaults(func=run_generate)

    p = sub.add_parser("app", help="start the web UI (as python -m app)")
    from app.main import add_arguments

    add_arguments(p)
    p.set_defaults(func=run_app)

    p = sub.add_parser("data", help="data-set tools")
    dsub = p.add_subparsers(dest="data_command", required=True)
    q = dsub.add_parser("inspect", help="summarise a captioned image folder")
    q.add_argument("path")
    q.add_argument("--format", default="auto")
    q.add_argument("--out", default=None, help="folder for inspect.json and samples.png")
    q.set_defaults(func=run_data_inspect)

    from .metrics.eval_cli import add_eval_parser

    add_eval_parser(sub)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
