"""Command line of the web UI: load the model(s) once, build the page, serve it.

    python -m app --model /path/to/pipeline [--compare-model OTHER] [--host 127.0.0.1] [--port 7860] [--share]

Listens on 127.0.0.1 unless --host says otherwise; a public share link only with --share.
"""

from __future__ import annotations

import argparse
import logging
import sys

import stackgan  # noqa: F401  (offline settings before gradio is imported)

log = logging.getLogger(__name__)
# candidates per sample for a model that declares no sampling of its own (model_index.json info.sampling)
APP_CANDIDATES = 4


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The web UI's options, shared by `python -m app` and `stackgan app`."""
    from stackgan.cli import add_sampling_args
    from stackgan.pipeline import PRECISIONS

    p.add_argument("--model", default=None,
                   help="pipeline folder (default: the bundled model in stackgan/assets/default)")
    p.add_argument("--compare-model", default=None, help="second pipeline folder for the Compare tab")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link (off by default; needs network)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="auto (default): the optimised inference path (folded batch norm, transposed convolutions, "
                        "stage II in bf16 where the hardware has native bf16 units); bf16: both stages in bf16; "
                        "fp32: the saved float32 generators as they are")
    add_sampling_args(p, fallback=APP_CANDIDATES)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m app", description="StackGAN web UI (Gradio).")
    add_arguments(p)
    return p.parse_args(argv)


def load_pipeline(path: str | None, role: str, precision: str = "fp32", candidates: int | None = None,
                  diversity: float | None = None):
    """Load a pipeline folder (None: the bundled model), `optimize`d unless precision is "fp32",
    with its candidate sampling set (None: the model's own, else 4 candidates, `choose_sampling`);
    a ValueError says what is wrong and how to fix it."""
    from stackgan.cli import choose_sampling
    from stackgan.pipeline import PipelineError, StackGANPipeline
    from stackgan.text.encoder import TextEncoderError

    try:
        pipe = StackGANPipeline.from_pretrained(path)
    except (PipelineError, TextEncoderError) as e:
        hint = "" if path else (" The bundled model is missing from this install; pass a trained pipeline "
                                "folder with --model RUN_DIR/pipeline.")
        raise ValueError(f"cannot load the {role} model: {str(e).rstrip('.')}.{hint}") from None
    if precision != "fp32":
        pipe.optimize(precision=precision)
    if candidates is not None and candidates > 1 and not pipe.text_encoder.has_image_tower:
        log.warning("the %s model's text encoder has no image tower to rank candidates: plain sampling", role)
        candidates = 1
    try:
        choose_sampling(pipe, candidates, diversity, fallback=APP_CANDIDATES)
    except PipelineError as e:
        raise ValueError(f"{e} (--candidates / --diversity)") from None
    return pipe


def main(argv: list[str] | None = None) -> int:
    return run(parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Serve the page for parsed `add_arguments` options; 2 with a message on bad input."""
    # open_clip logs its loading steps on the root logger: keep the root at WARNING, the app at INFO.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("app").setLevel(logging.INFO)
    if not 0 <= args.port <= 65535:
        print(f"error: --port must be in 0..65535, got {args.port}", file=sys.stderr)
        return 2
    try:
        pipe = load_pipeline(args.model, "main", args.precision, args.candidates, args.diversity)
        other = (load_pipeline(args.compare_model, "compare", args.precision, args.candidates, args.diversity)
                 if args.compare_model else None)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from .ui import build_demo, launch

    demo = build_demo(pipe, other)
    log.info("serving %s (%s, %s) on http://%s:%d%s", pipe.model_id, pipe.precision,
             f"best {pipe.candidates} candidates per sample" if pipe.candidates > 1 else "plain sampling",
             args.host, args.port, " (+ public share link)" if args.share else "")
    launch(demo, host=args.host, port=args.port, share=bool(args.share))
    return 0
