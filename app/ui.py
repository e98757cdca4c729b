"""The Gradio page: `build_demo(pipe, compare_pipe)` -> `gr.Blocks` (nothing is launched at import).

Layout: a title and one-line description, then three tabs. Generate: controls on the left,
the samples and their diversity score on the right. Compare: one caption and seed through
two models (or stage I vs stage II). Interpolate: frames between two seeds.
The callbacks live in `app/logic.py`; the wrappers here only turn its `error` into `gr.Error`
(a message, never a stack trace) and its `notes` into `gr.Warning` toasts and a notes line.
"""

from __future__ import annotations

import logging
from typing import Any

import stackgan  # noqa: F401  (offline settings: must run before gradio is imported)

# isort: split
import gradio as gr

from stackgan.pipeline import StackGANPipeline

from . import logic

log = logging.getLogger(__name__)

TITLE = "StackGAN: text to image"
DESCRIPTION = ("Write a caption and draw several samples of it; the diversity score beside them "
               "tells you whether the samples really differ or the model collapsed to one image.")

# Small images scaled up in the gallery stay crisp instead of blurred.
CSS = """
.pixelated img { image-rendering: pixelated; }
.pixelated .grid-container { grid-template-columns: repeat(var(--grid-cols), minmax(48px, 1fr)) !important;
                             grid-auto-rows: minmax(48px, auto) !important; }
#header h1 { margin-bottom: 0.2em; }
#header p { margin: 0.1em 0; }
#seed-row { align-items: flex-end; }
#randomise { max-width: 8.5em; }
.explain p { font-size: 0.85em; color: var(--body-text-color-subdued); margin: 0; }
#notes p, #notes li { font-size: 0.9em; }
"""

GALLERY_HEIGHT = 400
MODEL_LOCK = "model"  # one concurrency slot for every event that runs a model


# Requests allowed to wait: enough for 20 simultaneous users (one runs, 19 wait) at ~0.05 s per request;
# beyond it a request is refused at once instead of waiting minutes.
QUEUE_MAX_SIZE = 32

def _fail(error: str) -> None:
    raise gr.Error(error, title="Cannot generate", print_exception=False)


def _warn(notes: list[str]) -> str:
    for n in notes:
        gr.Warning(n, duration=8)
    return "\n".join(f"- {n}" for n in notes)


def _guard(fn, *args):
    """Run a logic function; unexpected failures reach the user as a short message (logged in full)."""
    try:
        return fn(*args)
    except gr.Error:
        raise
    except Exception as e:  # noqa: BLE001  (the user sees a message, the log gets the trace)
        log.exception("callback %s failed", getattr(fn, "__name__", fn))
        _fail(f"Generation failed ({type(e).__name__}: {str(e)[:200]}). See the server log.")


def build_demo(pipe: StackGANPipeline, compare_pipe: StackGANPipeline | None = None) -> gr.Blocks:
    """The whole page for a loaded pipeline (and an optional second one for the Compare tab).

    The queue is configured (max QUEUE_MAX_SIZE waiting, one model call at a time); launch with `launch()`.
    """
    stage0 = logic.default_stage(pipe)
    examples = logic.example_prompts(pipe)
    stage_choices = logic.STAGE_CHOICES if pipe.stage2 is not None else [logic.STAGE_1]

    # The model events run with preprocess=False: logic.py sees the raw values and validates them
    # itself (gradio would otherwise refuse out-of-range numbers before our clamping and its note).
    # Callbacks return plain values (the HTTP API gets lists of images and numbers, not
    # component updates); labels and visibility follow the stage radio instead.
    def on_generate(caption: str, num_samples: Any, seed: Any, stage: Any):
        r = _guard(logic.generate, pipe, caption, num_samples, seed, stage)
        if r.error:
            _fail(r.error)
        return r.images, r.stage1_images or [], r.diversity, r.diversity_stage1, _warn(r.notes), r.seed

    def on_stage(stage: str):
        # Relabel and clear: the images on show belong to the previous stage choice.
        both, one = stage == logic.STAGE_BOTH, stage == logic.STAGE_1
        name = "Stage I" if one else "Stage II"
        return (gr.Gallery(value=None, label=f"{name} samples"), gr.Gallery(value=None, visible=both),
                gr.Number(value=None, label=f"Diversity ({name[0].lower() + name[1:]})"),
                gr.Number(value=None, visible=both), "")

    def on_compare(caption: str, num_samples: Any, seed: Any):
        r = _guard(logic.compare, pipe, compare_pipe, caption, num_samples, seed)
        if r.error:
            _fail(r.error)
        return r.left, r.right, r.left_diversity, r.right_diversity, _warn(r.notes)

    def on_interpolate(caption: str, seed_a: Any, seed_b: Any, frames: Any, stage: Any):
        r = _guard(logic.interpolate, pipe, caption, seed_a, seed_b, frames, stage)
        if r.error:
            _fail(r.error)
        return [(im, f"t = {t:.2f}") for im, t in zip(r.images, r.ts)], _warn(r.notes)

    left_label, right_label = logic.compare_labels(pipe, compare_pipe)
    stage_name = "Stage I" if stage0 == logic.STAGE_1 else "Stage II"  # labels: "stage I samples", ...

    with gr.Blocks(title="StackGAN", analytics_enabled=False) as demo:
        with gr.Column(elem_id="header"):
            gr.Markdown(f"# {TITLE}\n{DESCRIPTION}")
            gr.Markdown(f"{logic.model_summary(pipe)} {logic.trained_on_note(pipe)}", elem_id="model-info")

        with gr.Tabs():
            # ------------------------------------------------------------ Generate
            with gr.Tab("Generate", id="generate-tab"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=2, min_width=300):
                        prompt = gr.Textbox(label="Caption", lines=2, max_lines=6, value=examples[0],
                                            placeholder=logic.EXAMPLE_CAPTION, elem_id="prompt")
                        samples = gr.Slider(1, logic.MAX_SAMPLES, value=logic.DEFAULT_SAMPLES, step=1,
                                            label="Number of samples", elem_id="samples")
                        with gr.Row(equal_height=False, elem_id="seed-row"):
                            seed = gr.Number(value=0, precision=0, minimum=0, maximum=logic.MAX_SEED, label="Seed",
                                             elem_id="seed", scale=3)
                            randomise = gr.Button("Randomise", elem_id="randomise", size="md", scale=1, min_width=100)
                        stage = gr.Radio(stage_choices, value=stage0, label="Stage", elem_id="stage",
                                         info="Stage I draws the low-resolution image, stage II refines it.")
                        generate = gr.Button("Generate", variant="primary", elem_id="generate")
                        gr.Examples([[p] for p in examples], inputs=[prompt], label="Example captions")
                    with gr.Column(scale=3, min_width=420):
                        with gr.Row():
                            gallery1 = gr.Gallery(label="Stage I of the same samples", columns=4, format="png",
                                                  elem_id="gallery-stage1", elem_classes="pixelated", height=GALLERY_HEIGHT,
                                                  object_fit="contain", visible=False, interactive=False)
                            gallery = gr.Gallery(label=f"{stage_name} samples", columns=4, format="png", elem_id="gallery",
                                                 elem_classes="pixelated", height=GALLERY_HEIGHT, object_fit="contain",
                                                 interactive=False)
                        with gr.Row(equal_height=True):
                            diversity1 = gr.Number(label="Diversity (stage I)", info="The same score for the stage I images.",
                                                   interactive=False, elem_id="diversity-stage1", visible=False, scale=1)
                            diversity = gr.Number(label=f"Diversity ({stage_name[0].lower() + stage_name[1:]})",
                                                  info=logic.diversity_explanation(pipe, short=True), interactive=False,
                                                  elem_id="diversity", scale=3)
                        notes = gr.Markdown(elem_id="notes")

                randomise.click(logic.random_seed, None, seed, api_name=False, queue=False)
                gen_inputs = [prompt, samples, seed, stage]
                gen_outputs = [gallery, gallery1, diversity, diversity1, notes, seed]
                generate.click(on_generate, gen_inputs, gen_outputs, api_name="generate", concurrency_id=MODEL_LOCK, preprocess=False)
                prompt.submit(on_generate, gen_inputs, gen_outputs, api_name=False, concurrency_id=MODEL_LOCK, preprocess=False)
                stage.change(on_stage, stage, [gallery, gallery1, diversity, diversity1, notes], api_name=False, queue=False)

            # ------------------------------------------------------------ Compare
            with gr.Tab("Compare", id="compare-tab"):
                if compare_pipe is not None:
                    gr.Markdown(f"The same caption and seed through **{pipe.model_id}** (left) and "
                                f"**{compare_pipe.model_id}** (right), each at its highest stage.")
                else:
                    gr.Markdown("No second model is loaded, so this tab compares **stage I and stage II of the same "
                                "samples**. To compare two models, start the app with a second one: "
                                "`stackgan app --model PATH --compare-model OTHER_PATH` "
                                "(or `python -m app --model PATH --compare-model OTHER_PATH`).")
                with gr.Row(equal_height=False):
                    with gr.Column(scale=2, min_width=300):
                        c_prompt = gr.Textbox(label="Caption", lines=2, max_lines=6, value=examples[0], elem_id="c-prompt")
                        c_samples = gr.Slider(1, logic.MAX_SAMPLES, value=logic.DEFAULT_SAMPLES, step=1,
                                              label="Number of samples", elem_id="c-samples")
                        c_seed = gr.Number(value=0, precision=0, minimum=0, maximum=logic.MAX_SEED, label="Seed",
                                           elem_id="c-seed")
                        c_button = gr.Button("Compare", variant="primary", elem_id="compare")
                    with gr.Column(scale=3, min_width=420):
                        with gr.Row():
                            c_left = gr.Gallery(label=left_label, columns=4, format="png", elem_id="c-left",
                                                elem_classes="pixelated", height=GALLERY_HEIGHT, interactive=False)
                            c_right = gr.Gallery(label=right_label, columns=4, format="png", elem_id="c-right",
                                                 elem_classes="pixelated", height=GALLERY_HEIGHT, interactive=False)
                        with gr.Row():
                            c_div_left = gr.Number(label=f"Diversity: {left_label}", interactive=False)
                            c_div_right = gr.Number(label=f"Diversity: {right_label}", interactive=False)
                        gr.Markdown(logic.diversity_explanation(pipe), elem_classes="explain")
                        c_notes = gr.Markdown()
                c_button.click(on_compare, [c_prompt, c_samples, c_seed],
                               [c_left, c_right, c_div_left, c_div_right, c_notes],
                               api_name="compare", concurrency_id=MODEL_LOCK, preprocess=False)

            # ------------------------------------------------------------ Interpolate
            with gr.Tab("Interpolate", id="interpolate-tab"):
                gr.Markdown("Frames from seed A to seed B for one caption: the noise of the two seeds is "
                            "interpolated spherically while the text stays fixed. The end frames are what "
                            "Generate draws for seed A and for seed B with 1 sample.")
                with gr.Row(equal_height=False):
                    with gr.Column(scale=2, min_width=300):
                        i_prompt = gr.Textbox(label="Caption", lines=2, max_lines=6, value=examples[0], elem_id="i-prompt")
                        with gr.Row():
                            i_seed_a = gr.Number(value=0, precision=0, minimum=0, maximum=logic.MAX_SEED,
                                                 label="Seed A", elem_id="i-seed-a")
                            i_seed_b = gr.Number(value=1, precision=0, minimum=0, maximum=logic.MAX_SEED,
                                                 label="Seed B", elem_id="i-seed-b")
                        i_frames = gr.Slider(logic.MIN_FRAMES, logic.MAX_FRAMES, value=logic.DEFAULT_FRAMES, step=1,
                                             label="Frames (both ends included)", elem_id="i-frames")
                        i_stage = gr.Radio([c for c in stage_choices if c != logic.STAGE_BOTH], value=stage0,
                                           label="Stage", elem_id="i-stage")
                        i_button = gr.Button("Interpolate", variant="primary", elem_id="interpolate")
                    with gr.Column(scale=3, min_width=420):
                        i_gallery = gr.Gallery(label="Frames", columns=8, format="png", elem_id="i-gallery",
                                               elem_classes="pixelated", height=240, interactive=False)
                        i_notes = gr.Markdown()
                i_button.click(on_interpolate, [i_prompt, i_seed_a, i_seed_b, i_frames, i_stage], [i_gallery, i_notes],
                               api_name="interpolate", concurrency_id=MODEL_LOCK, preprocess=False)

    demo.queue(max_size=QUEUE_MAX_SIZE, default_concurrency_limit=1)
    return demo


def launch(demo: gr.Blocks, host: str = "127.0.0.1", port: int | None = 7860, share: bool = False,
           prevent_thread_lock: bool = False, quiet: bool = False):
    """Serve the page (only its own outputs: no allowed_paths). Returns (app, local_url, share_url)."""
    return demo.launch(server_name=host, server_port=port, share=share, show_error=True,
                       prevent_thread_lock=prevent_thread_lock, quiet=quiet, css=CSS, footer_links=["api"])
