"""Pipeline API, bundled model, `stackgan generate`, prompt files: behaviour and bad inputs."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_tiny_pipeline

from stackgan.cli import main as cli_main
from stackgan.pipeline import DEFAULT_MODEL_DIR, PipelineError, StackGANPipeline, select_candidates
from stackgan.prompts import PromptFileError, parse_prompts, read_prompt_file, slugify


@pytest.fixture(scope="module")
def pipe(tiny_pipeline_dir):
    return StackGANPipeline.from_pretrained(tiny_pipeline_dir)


def test_output_types_and_shapes(pipe):
    out = pipe(["a red circle", "a blue star"], num_images_per_prompt=3, seed=0, output_type="pt")
    assert out.images.shape == (6, 3, 32, 32) and out.images.dtype == torch.uint8
    assert out.stage1_images.shape == (6, 3, 16, 16)
    arr = pipe("a red circle", num_images_per_prompt=2, seed=0, output_type="np").images
    assert arr.shape == (2, 32, 32, 3) and arr.dtype == np.uint8
    pil = pipe("a red circle", num_images_per_prompt=2, seed=0).images
    assert len(pil) == 2 and pil[0].size == (32, 32)
    low = pipe("a red circle", num_images_per_prompt=2, seed=0, stage=1, output_type="pt")
    assert low.images.shape == (2, 3, 16, 16) and low.stage1_images is None


def test_deterministic_for_a_seed_and_generator(pipe):
    a = pipe("a red circle", num_images_per_prompt=4, seed=7, output_type="pt").images
    b = pipe("a red circle", num_images_per_prompt=4, seed=7, output_type="pt").images
    c = pipe("a red circle", num_images_per_prompt=4, seed=8, output_type="pt").images
    g = torch.Generator().manual_seed(7)
    d = pipe("a red circle", num_images_per_prompt=4, generator=g, output_type="pt").images
    assert torch.equal(a, b) and torch.equal(a, d) and not torch.equal(a, c)


def test_noise_scale_zero_removes_variation(pipe):
    out = pipe("a red circle", num_images_per_prompt=4, seed=0, noise_scale=0.0, output_type="pt").images
    assert all(torch.equal(out[0], out[i]) for i in range(4))
    t = pipe("a red circle", num_images_per_prompt=4, seed=0, truncation=0.5, output_type="pt").images
    assert t.shape == (4, 3, 32, 32)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"prompts": ""}, "empty"),
        ({"prompts": "   \t "}, "empty"),
        ({"prompts": []}, "non-empty list"),
        ({"prompts": ["ok", 3]}, "not a string"),
        ({"prompts": "x", "num_images_per_prompt": 0}, "num_images_per_prompt"),
        ({"prompts": "x", "num_images_per_prompt": 10_000}, "num_images_per_prompt"),
        ({"prompts": "x", "stage": 3}, "stage"),
        ({"prompts": "x", "output_type": "jpeg"}, "output_type"),
        ({"prompts": "x", "noise_scale": -1}, "noise_scale"),
        ({"prompts": "x", "truncation": 0}, "truncation"),
        ({"prompts": "x", "candidates": 0}, "candidates must be an integer in"),
        ({"prompts": "x", "candidates": 17}, "candidates must be an integer in"),
        ({"prompts": "x", "candidates": 2, "diversity": -1}, "diversity"),
    ],
)
def test_bad_call_arguments(pipe, kwargs, message):
    with pytest.raises(PipelineError, match=message):
        pipe(**kwargs)


def test_select_candidates_trades_match_for_variety():
    match = torch.tensor([0.9, 0.89, 0.5, 0.4])
    emb = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])  # 0 and 1 are the same image
    assert select_candidates(match, emb, 2, diversity=0.0).tolist() == [0, 1]  # the two best matches
    assert select_candidates(match, emb, 2, diversity=0.5).tolist() == [0, 2]  # 1 repeats 0: 0.89 - 0.5 < 0.5 - 0
    # then 1 (0.89 - 0.5 * 1 = 0.39) before 3 (0.4 - 0.5 * max(0.6, 0.8) = 0.0)
    assert select_candidates(match, emb, 4, diversity=0.5).tolist() == [0, 2, 1, 3]
    with pytest.raises(ValueError, match="cannot keep 5 of 4"):
        select_candidates(match, emb, 5)


def test_candidates_keep_the_tower_best_of_the_pool(pipe):
    pool = pipe("a red circle", num_images_per_prompt=6, seed=5, output_type="pt")
    out = pipe("a red circle", num_images_per_prompt=2, seed=5, output_type="pt", candidates=3, diversity=0.0)
    enc = pipe.text_encoder
    match = enc.encode_images(pool.images) @ enc.encode(["a red circle"])[0]
    best = match.argsort(descending=True)[:2]
    assert torch.equal(out.images, pool.images[best]) and torch.equal(out.stage1_images, pool.stage1_images[best])
    two = pipe(["a red circle", "a blue star"], num_images_per_prompt=2, seed=5, output_type="pt", candidates=3)
    assert two.images.shape == (4, 3, 32, 32) and two.stage1_images.shape == (4, 3, 16, 16)


def test_set_sampling_sets_the_defaults_of_calls(tiny_pipeline_dir):
    p = StackGANPipeline.from_pretrained(tiny_pipeline_dir)
    plain = p("a red circle", num_images_per_prompt=2, seed=5, output_type="pt").images
    ranked = p("a red circle", num_images_per_prompt=2, seed=5, output_type="pt", candidates=3).images
    assert p.set_sampling(candidates=3) is p and (p.candidates, p.diversity) == (3, 0.5)
    assert torch.equal(p("a red circle", num_images_per_prompt=2, seed=5, output_type="pt").images, ranked)
    assert torch.equal(p("a red circle", num_images_per_prompt=2, seed=5, output_type="pt", candidates=1).images, plain)
    with pytest.raises(PipelineError, match="diversity must be a number in"):
        p.set_sampling(candidates=2, diversity=9)
    assert (p.candidates, p.diversity) == (3, 0.5)  # a refused setting changes nothing


def test_a_declared_sampling_is_what_generate_uses_unless_told_otherwise(tiny_pipeline_dir, tmp_path):
    model = tmp_path / "declared"
    p = StackGANPipeline.from_pretrained(tiny_pipeline_dir)
    assert p.recommended_sampling is None
    p.info["sampling"] = {"candidates": 3, "diversity": 0.25}
    p.save_pretrained(model)
    q = StackGANPipeline.from_pretrained(model)
    assert q.recommended_sampling == {"candidates": 3, "diversity": 0.25}
    assert (q.candidates, q.diversity) == (1, 0.5)  # the Python call samples plainly until set_sampling
    args = ["generate", "--prompt", "a red circle", "--num-images", "2", "--model", str(model)]
    for extra, want in (([], (3, 0.25)), (["--candidates", "1"], (1, 0.25)), (["--diversity", "0"], (3, 0.0))):
        out = tmp_path / f"out{len(extra)}{extra[-1] if extra else ''}"
        assert cli_main([*args, *extra, "--out", str(out)]) == 0
        rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
        assert {(r["candidates"], r["diversity"]) for r in rows} == {want}


@pytest.mark.parametrize("declared, message", [
    ({"candidates": 0, "diversity": 0.5}, "candidates must be an integer"),
    ({"candidates": 2, "diversity": "high"}, "diversity must be a number"),
    ({"candidates": 2}, "must be"),
    ([4, 0.5], "must be"),
])
def test_a_bad_declared_sampling_names_the_file(tiny_pipeline_dir, tmp_path, declared, message):
    p = StackGANPipeline.from_pretrained(tiny_pipeline_dir)
    p.info["sampling"] = declared
    with pytest.raises(PipelineError, match="info.sampling") as e:
        p._declared_sampling()
    assert message in str(e.value) and "remove it" in str(e.value)
    folder = tmp_path / "bad"
    StackGANPipeline.from_pretrained(tiny_pipeline_dir).save_pretrained(folder)
    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    index["info"]["sampling"] = declared
    (folder / "model_index.json").write_text(json.dumps(index), encoding="utf-8")
    with pytest.raises(PipelineError, match=r"model_index.json: info.sampling"):
        StackGANPipeline.from_pretrained(folder)


def test_candidates_need_an_image_tower(pipe, monkeypatch):
    monkeypatch.setattr(type(pipe.text_encoder), "has_image_tower", property(lambda self: False))
    with pytest.raises(PipelineError, match="needs a text encoder with an image tower"):
        pipe("a red circle", num_images_per_prompt=2, candidates=2)


def test_long_caption_is_truncated_with_a_note(pipe):
    out = pipe("a red circle " * 60, num_images_per_prompt=1, seed=0)
    assert out.notes and "only the first" in out.notes[0]


def test_save_load_round_trip_identical(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "copy")
    again = StackGANPipeline.from_pretrained(tmp_path / "copy")
    a = pipe("a blue star", num_images_per_prompt=3, seed=1, output_type="pt").images
    b = again("a blue star", num_images_per_prompt=3, seed=1, output_type="pt").images
    assert torch.equal(a, b)
    assert not list((tmp_path / "copy").rglob("*.bin")) and not list((tmp_path / "copy").rglob("*.pt"))


def test_missing_component_file(tiny_pipeline_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_pipeline_dir, broken)
    (broken / "stage1" / "model.safetensors").unlink()
    with pytest.raises(PipelineError, match="stage1.*model.safetensors is missing"):
        StackGANPipeline.from_pretrained(broken)


def test_truncated_weights(tiny_pipeline_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_pipeline_dir, broken)
    f = broken / "stage2" / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(PipelineError, match="truncated or corrupt"):
        StackGANPipeline.from_pretrained(broken)


def test_wrong_keys_are_named(tiny_pipeline_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    shutil.copytree(tiny_pipeline_dir, broken)
    f = broken / "stage1" / "model.safetensors"
    state = load_file(str(f))
    state["extra.weight"] = torch.zeros(1)
    del state["fc.0.weight"]
    save_file(state, str(f))
    with pytest.raises(PipelineError, match=r"missing keys: fc\.0\.weight.*unexpected keys: extra\.weight"):
        StackGANPipeline.from_pretrained(broken)


def test_mismatched_text_encoder(tiny_pipeline_dir, tmp_path):
    other = make_tiny_pipeline(seed=1)  # same architecture, other random encoder weights
    broken = tmp_path / "broken"
    shutil.copytree(tiny_pipeline_dir, broken)
    shutil.rmtree(broken / "text_encoder")
    from stackgan.text.encoder import save_text_encoder

    save_text_encoder(other.text_encoder, broken / "text_encoder")
    with pytest.raises(PipelineError, match="not the one the generator was trained with"):
        StackGANPipeline.from_pretrained(broken)


def test_not_a_pipeline_folder(tmp_path):
    with pytest.raises(PipelineError, match="does not exist"):
        StackGANPipeline.from_pretrained(tmp_path / "nope")
    with pytest.raises(PipelineError, match="model_index.json"):
        StackGANPipeline.from_pretrained(tmp_path)


def test_bundled_model_loads_and_is_small():
    size = sum(f.stat().st_size for f in DEFAULT_MODEL_DIR.rglob("*") if f.is_file())
    assert size < 50 * 2**20
    pipe = StackGANPipeline.from_pretrained()
    assert pipe.resolution >= 64 and pipe.info["example_prompts"]
    out = pipe(pipe.info["example_prompts"][0], num_images_per_prompt=2, seed=0, output_type="pt")
    assert out.images.shape == (2, 3, 64, 64)
    assert (DEFAULT_MODEL_DIR / "README.md").exists()
    # served (app, generate, eval) as its benchmark figures were measured: 4 candidates per sample
    assert pipe.recommended_sampling == {"candidates": 4, "diversity": 0.5}


# ---------------------------------------------------------------- prompt files
def test_parse_prompts_skips_blank_and_comments():
    got = parse_prompts("# header\n\na red circle\n   \n  # indented comment\nblue   star \n")
    assert got == [(3, "a red circle"), (6, "blue star")]


def test_prompt_file_errors(tmp_path):
    with pytest.raises(PromptFileError, match="does not exist"):
        read_prompt_file(tmp_path / "missing.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("# only a comment\n\n", encoding="utf-8")
    with pytest.raises(PromptFileError, match="holds no prompts"):
        read_prompt_file(empty)
    latin = tmp_path / "latin.txt"
    latin.write_bytes("a red circle\nun cercle rouge fonc\xe9\n".encode("latin-1"))
    with pytest.raises(PromptFileError, match=r"latin.txt, line 2: not valid UTF-8"):
        read_prompt_file(latin)
    huge = tmp_path / "huge.txt"
    huge.write_text("a red circle\n" * 20_000, encoding="utf-8")
    with pytest.raises(PromptFileError, match="more than"):
        read_prompt_file(huge)
    long = tmp_path / "long.txt"
    long.write_text("ok\n" + "x" * 5000 + "\n", encoding="utf-8")
    with pytest.raises(PromptFileError, match="line 2"):
        read_prompt_file(long)


@pytest.mark.parametrize("text", ["../../etc/passwd", "a/b\\c", "..", "", "  ", "日本語", "CON", "a" * 300, "x\x00y"])
def test_slugs_are_safe(text):
    slug = slugify(text)
    assert slug and len(slug) <= 48 and ".." not in slug and "/" not in slug and "\\" not in slug
    assert all(ch.isalnum() or ch == "-" for ch in slug)


# ---------------------------------------------------------------- stackgan generate
def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*.png"))}


def test_generate_cli_writes_images_grids_manifest(tiny_pipeline_dir, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# three prompts\na red circle\n\na red circle\n../../escape attempt\n", encoding="utf-8")
    args = ["generate", "--prompts", str(prompts), "--num-images", "4", "--seed", "0", "--model", str(tiny_pipeline_dir)]
    assert cli_main([*args, "--out", str(tmp_path / "a")]) == 0
    assert cli_main([*args, "--out", str(tmp_path / "b")]) == 0
    a = tmp_path / "a"
    samples = sorted(a.rglob("sample-*.png"))
    grids = sorted(a.rglob("grid.png"))
    rows = [json.loads(line) for line in (a / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(samples) == 12 and len(grids) == 3 and len(rows) == 12
    assert {r["line"] for r in rows} == {2, 4, 5}
    assert all((a / r["file"]).resolve().is_relative_to(a.resolve()) for r in rows)
    assert len({r["file"] for r in rows}) == 12  # the two equal prompts do not collide
    assert {"prompt", "line", "seed", "sample", "file", "model"} <= set(rows[0])
    assert _digest(a) == _digest(tmp_path / "b")  # same seed, identical files
    assert {r["precision"] for r in rows} == {"fp32"}  # the default: the saved generators as they are
    assert {r["candidates"] for r in rows} == {1}  # and plain sampling


def test_generate_cli_optimised_precision(tiny_pipeline_dir, tmp_path):
    from stackgan.optimize import bf16_available

    args = ["generate", "--prompt", "a red circle", "--num-images", "4", "--seed", "0", "--model", str(tiny_pipeline_dir)]
    assert cli_main([*args, "--out", str(tmp_path / "plain")]) == 0
    assert cli_main([*args, "--precision", "auto", "--out", str(tmp_path / "auto")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "auto" / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {r["precision"] for r in rows} == {"bf16-stage2" if bf16_available(torch.device("cpu")) else "fp32"}
    from PIL import Image

    a = np.stack([np.asarray(Image.open(p)) for p in sorted((tmp_path / "plain").rglob("sample-*.png"))]).astype(int)
    b = np.stack([np.asarray(Image.open(p)) for p in sorted((tmp_path / "auto").rglob("sample-*.png"))]).astype(int)
    assert a.shape == b.shape == (4, 32, 32, 3) and np.abs(a - b).mean() < 3  # the same images, up to rounding
    assert cli_main([*args, "--candidates", "3", "--diversity", "0", "--out", str(tmp_path / "ranked")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "ranked" / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 4 and {(r["candidates"], r["diversity"]) for r in rows} == {(3, 0.0)}
    assert cli_main([*args, "--candidates", "17", "--out", str(tmp_path / "bad")]) == 2


def test_generate_cli_errors(tiny_pipeline_dir, tmp_path, capsys):
    assert cli_main(["generate", "--prompts", str(tmp_path / "none.txt"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli_main(["generate", "--prompt", "   ", "--out", str(tmp_path / "o")]) == 2
    assert "empty" in capsys.readouterr().err
    assert cli_main(["generate", "--prompt", "x", "--model", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "model_index.json" in capsys.readouterr().err
    assert cli_main(["generate", "--prompt", "x", "--num-images", "0", "--out", str(tmp_path / "o")]) == 2
