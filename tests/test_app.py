"""The web UI's callbacks (app/logic.py) on a tiny random pipeline, then once through gradio_client."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch
from conftest import make_tiny_pipeline

from app import logic


@pytest.fixture(scope="module")
def pipe():
    return make_tiny_pipeline()


def _arrays(images) -> np.ndarray:
    return np.stack([np.asarray(im) for im in images]).astype(np.int16)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------- generate
@pytest.mark.parametrize("stage, n", [(logic.STAGE_1, 3), (logic.STAGE_2, 5), (logic.STAGE_BOTH, 4)])
def test_generate_counts_sizes_and_scores(pipe, stage, n):
    r = logic.generate(pipe, "a red circle", n, 7, stage)
    assert r.error is None and r.notes == []
    assert len(r.images) == n and (r.seed, r.num_samples, r.stage) == (7, n, stage)
    side = pipe.stage1.resolution if stage == logic.STAGE_1 else pipe.resolution
    assert r.images[0].size == (side, side)
    assert isinstance(r.diversity, float) and 0.0 <= r.diversity <= 2.0
    if stage == logic.STAGE_BOTH:
        assert len(r.stage1_images) == n and r.stage1_images[0].size == (pipe.stage1.resolution,) * 2
        assert isinstance(r.diversity_stage1, float) and 0.0 <= r.diversity_stage1 <= 2.0
    else:
        assert r.stage1_images is None and r.diversity_stage1 is None


def test_diversity_score_range_and_identical_images(pipe):
    g = torch.Generator().manual_seed(0)
    different = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8, generator=g)
    same = different[:1].repeat(5, 1, 1, 1)
    d = logic.diversity_score(pipe, different)
    assert isinstance(d, float) and 0.0 < d <= 2.0
    assert logic.diversity_score(pipe, same) == 0.0
    assert logic.diversity_score(pipe, same[:1]) is None  # one sample: no pairs
    assert "CLIP image embeddings (shapes-clip-tiny image tower)" in logic.diversity_explanation(pipe)


def test_same_seed_same_images_other_seed_other_images(pipe):
    a = logic.generate(pipe, "a blue star", 4, 123, logic.STAGE_2)
    b = logic.generate(pipe, "a blue star", 4, 123, logic.STAGE_2)
    c = logic.generate(pipe, "a blue star", 4, 124, logic.STAGE_2)
    assert np.array_equal(_arrays(a.images), _arrays(b.images)) and a.diversity == b.diversity
    assert not np.array_equal(_arrays(a.images), _arrays(c.images))


BAD_INPUTS = [
    # caption, samples, seed, stage, refused?, words in the message
    ("", 8, 0, logic.STAGE_2, True, "caption is empty"),
    (" \n\t ", 8, 0, logic.STAGE_2, True, "caption is empty"),
    (None, 8, 0, logic.STAGE_2, True, "caption is empty"),
    (12, 8, 0, logic.STAGE_2, True, "must be text"),
    ("a red circle", 8, "abc", logic.STAGE_2, True, "seed must be a whole number"),
    ("a red circle", 8, float("nan"), logic.STAGE_2, True, "seed must be a whole number"),
    ("a red circle", 0, 0, logic.STAGE_2, False, "between 1 and 32; 0 was changed to 1"),
    ("a red circle", 99, 0, logic.STAGE_2, False, "between 1 and 32; 99 was changed to 32"),
    ("a red circle", 2.5, 0, logic.STAGE_2, False, "2.5 was rounded to 2"),
    ("a red circle", "lots", 0, logic.STAGE_2, False, "is not a number; used 8"),
    ("a red circle", 2, -3, logic.STAGE_2, False, "-3 was changed to 0"),
    ("a red circle", 2, 2**40, logic.STAGE_2, False, f"was changed to {2**31 - 1}"),
    ("a red circle", 2, 1.5, logic.STAGE_2, False, "1.5 was rounded to 2"),
    ("a red circle", 2, None, logic.STAGE_2, False, "No seed given"),
    ("a red circle", 2, 0, "Stage IX", False, "Unknown stage"),
    ("a red circle " * 20, 2, 0, logic.STAGE_2, False, "Caption truncated"),
    ("x" * 5000, 2, 0, logic.STAGE_2, False, "only the first 1000 were kept"),
]


@pytest.mark.parametrize("caption, n, seed, stage, refused, words", BAD_INPUTS)
def test_bad_inputs_give_a_message_not_an_exception(pipe, caption, n, seed, stage, refused, words):
    r = logic.generate(pipe, caption, n, seed, stage)
    text = " ".join(filter(None, [r.error, *r.notes]))
    assert words in text, text
    if refused:
        assert r.error and r.images == []
    else:
        assert r.error is None and 1 <= len(r.images) <= logic.MAX_SAMPLES
        assert 0 <= r.seed <= logic.MAX_SEED


def test_model_without_stage2_falls_back_to_stage1():
    pipe1 = make_tiny_pipeline(stage2=False)
    r = logic.generate(pipe1, "a red circle", 2, 0, logic.STAGE_BOTH)
    assert r.error is None and r.stage == logic.STAGE_1 and "has no stage II" in " ".join(r.notes)
    assert r.images[0].size == (pipe1.stage1.resolution,) * 2
    assert "no stage II" in logic.compare(pipe1, None, "a red circle", 2, 0).error


# ---------------------------------------------------------------------------- compare, interpolate
def test_compare_stages_of_one_model_and_two_models(pipe):
    r = logic.compare(pipe, None, "a red circle", 3, 5)
    assert r.error is None and len(r.left) == len(r.right) == 3
    assert "stage I" in r.left_label and "stage II" in r.right_label
    assert r.left[0].size == (pipe.stage1.resolution,) * 2 and r.right[0].size == (pipe.resolution,) * 2
    assert 0.0 <= r.left_diversity <= 2.0 and 0.0 <= r.right_diversity <= 2.0
    same = logic.generate(pipe, "a red circle", 3, 5, logic.STAGE_2)
    assert np.array_equal(_arrays(r.right), _arrays(same.images))

    other = make_tiny_pipeline(seed=1)
    r2 = logic.compare(pipe, other, "a red circle", 3, 5)
    assert r2.error is None and r2.left_label.startswith("tiny-0") and r2.right_label.startswith("tiny-1")
    assert np.array_equal(_arrays(r2.left), _arrays(same.images))
    assert not np.array_equal(_arrays(r2.left), _arrays(r2.right))
    assert logic.compare(pipe, other, "   ", 3, 5).error


def test_interpolate_end_frames_are_the_seeds_images(pipe):
    r = logic.interpolate(pipe, "a red circle", 3, 9, 5, logic.STAGE_2)
    assert r.error is None and len(r.images) == 5 and r.ts == [0.0, 0.25, 0.5, 0.75, 1.0]
    for frame, seed in ((r.images[0], 3), (r.images[-1], 9)):
        alone = logic.generate(pipe, "a red circle", 1, seed, logic.STAGE_2).images[0]
        assert np.abs(np.asarray(frame, np.int16) - np.asarray(alone, np.int16)).max() <= 1
    again = logic.interpolate(pipe, "a red circle", 3, 9, 5, logic.STAGE_2)
    assert np.array_equal(_arrays(r.images), _arrays(again.images))
    low = logic.interpolate(pipe, "a red circle", 3, 9, 99, logic.STAGE_1)
    assert len(low.images) == logic.MAX_FRAMES and low.images[0].size == (pipe.stage1.resolution,) * 2
    assert "16" in " ".join(low.notes)
    assert "same image" in " ".join(logic.interpolate(pipe, "a red circle", 4, 4, 3).notes)
    assert logic.interpolate(pipe, "", 0, 1, 3).error


def test_slerp_ends_norm_and_parallel_inputs():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 64, generator=g), torch.randn(2, 64, generator=g)
    assert torch.allclose(logic.slerp(a, b, 0.0), a, atol=1e-5) and torch.allclose(logic.slerp(a, b, 1.0), b, atol=1e-5)
    mid = logic.slerp(a, b, 0.5)
    assert (mid.norm(dim=1) > 0.9 * torch.minimum(a.norm(dim=1), b.norm(dim=1))).all()  # no shrink to the origin
    assert torch.allclose(logic.slerp(a, 2 * a, 0.5), 1.5 * a, atol=1e-5)  # parallel: linear


def test_random_seed_in_range():
    seeds = {logic.random_seed() for _ in range(20)}
    assert all(0 <= s <= logic.MAX_SEED for s in seeds) and len(seeds) > 1


# ---------------------------------------------------------------------------- through a server
def test_gradio_client_generate(pipe, tmp_path):
    from gradio_client import Client

    from app.ui import build_demo, launch

    demo = build_demo(pipe)
    try:
        _, url, share_url = launch(demo, host="127.0.0.1", port=free_port(), prevent_thread_lock=True, quiet=True)
        assert url.startswith("http://127.0.0.1:") and share_url is None
        client = Client(url, analytics_enabled=False, verbose=False, download_files=str(tmp_path))
        gallery, stage1, diversity, _, notes, seed = client.predict(
            "a red circle", 3, 11, logic.STAGE_2, api_name="/generate")
        assert len(gallery) == 3 and stage1 == [] and 0.0 <= diversity <= 2.0 and seed == 11 and notes == ""
        # out-of-range values reach logic.py (no gradio preprocessing) and come back repaired
        gallery, _, _, _, notes, seed = client.predict("a red circle", 40, -1, logic.STAGE_2, api_name="/generate")
        assert len(gallery) == 32 and seed == 0 and "changed to 32" in notes
        with pytest.raises(Exception, match="caption is empty"):
            client.predict("   ", 3, 0, logic.STAGE_2, api_name="/generate")
        client.close()
    finally:
        demo.close()


def test_command_line_defaults_and_missing_model(tmp_path, capsys):
    from app.main import main, parse_args

    args = parse_args([])
    assert (args.host, args.port, args.share, args.model, args.compare_model, args.precision, args.candidates) == (
        "127.0.0.1", 7860, False, None, None, "auto", None)  # None: the model's own sampling, else 4 candidates
    assert parse_args(["--share", "--compare-model", "b"]).share is True
    assert main(["--model", str(tmp_path / "missing"), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "cannot load the main model" in err and "does not exist" in err and "Traceback" not in err
    from stackgan.cli import main as cli_main

    # `stackgan app` takes the same options and runs the same code
    assert cli_main(["app", "--model", str(tmp_path / "missing"), "--port", "0", "--candidates", "2"]) == 2
    assert "cannot load the main model" in capsys.readouterr().err


def test_load_pipeline_optimises_unless_fp32(tiny_pipeline_dir):
    from app.main import load_pipeline

    assert load_pipeline(str(tiny_pipeline_dir), "main", "fp32")._fast is None
    fast = load_pipeline(str(tiny_pipeline_dir), "main", "auto", candidates=3, diversity=0.25)
    assert fast._fast is not None and fast.precision in ("fp32", "bf16-stage2")
    assert (fast.candidates, fast.diversity) == (3, 0.25)
    from app import logic

    assert "picked from 3 candidates" in logic.model_summary(fast)  # the page says how samples are chosen
    assert "candidates" not in logic.model_summary(load_pipeline(str(tiny_pipeline_dir), "main", "fp32", candidates=1))
    # left out: the tiny model declares no sampling, so the app's 4 candidates
    assert (load_pipeline(str(tiny_pipeline_dir), "main", "fp32").candidates, fast.diversity) == (4, 0.25)
    with pytest.raises(ValueError, match=r"candidates must be an integer in \[1, 16\].*--candidates"):
        load_pipeline(str(tiny_pipeline_dir), "main", "fp32", candidates=99)
