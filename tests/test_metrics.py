"""The metrics registry, the shapes probe and benchmark, the standard metrics' code paths, and `stackgan eval`.

Generators here are stand-ins with known behaviour (perfect, collapsed, constant gray, noise);
standard metrics run with small random-weight networks saved to local files, the way a user
passes downloaded weights.
"""

from __future__ import annotations

import json
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from stackgan.data.shapes import ATTRIBUTES, ShapesDataset, render, sample_attributes
from stackgan.metrics import MetricError, available, evaluate, get_metric
from stackgan.metrics.probe import PROBE_VERSION, ProbeFeatures, load_probe
from stackgan.metrics.shapes_bench import (
    PROMPT_SET_VERSION,
    build_prompt_set,
    faithfulness_scores,
    frechet_distances,
    load_prompt_set,
)

PROMPTS = {e["prompt"]: e["attributes"] for e in load_prompt_set()["prompts"]}
FAST = {"real_pool_size": 2000}  # a smaller pool of real test images to search (the rest is rendered)


class FakeGenerator:
    """Prompts of the packaged set -> uint8 images: "perfect" (renders matching the prompt), "collapsed"
    (one such render repeated K times), "gray" (constant 128) or "noise"."""

    def __init__(self, kind: str, resolution: int = 64):
        self.kind, self.resolution, self.model_id = kind, resolution, f"fake-{kind}"

    def __call__(self, prompts, num_images_per_prompt=1, seed=0, output_type="pt", stage=2):
        k, r = num_images_per_prompt, self.resolution
        g = torch.Generator().manual_seed(seed)
        out = []
        for p in prompts:
            rng = random.Random(f"{self.kind}/{seed}/{p}")
            if self.kind == "gray":
                out.append(torch.full((k, 3, r, r), 128, dtype=torch.uint8))
            elif self.kind == "noise":
                out.append(torch.randint(0, 256, (k, 3, r, r), dtype=torch.uint8, generator=g))
            else:
                n = 1 if self.kind == "collapsed" else k
                imgs = [torch.from_numpy(render(sample_attributes(rng, fixed=PROMPTS[p]), r).transpose(2, 0, 1).copy())
                        for _ in range(n)]
                out.append(torch.stack(imgs * (k // n)))
        return SimpleNamespace(images=torch.cat(out))


# ---------------------------------------------------------------------------------------------- registry
def test_registry_lists_metrics_and_rejects_unknown_names():
    names = available()
    for n in ("faithfulness", "diversity", "probe_fid", "fid", "kid", "inception_score", "clip_score",
              "clip_r_precision", "lpips_diversity", "feature_diversity"):
        assert n in names
    with pytest.raises(ValueError, match="known metrics: .*faithfulness"):
        get_metric("faithfulnes")
    with pytest.raises(ValueError, match="unknown metric 'bogus'.*probe_fid"):
        evaluate(FakeGenerator("gray"), ["faithfulness", "bogus"], None, FAST)
    with pytest.raises(ValueError, match="unknown evaluation option"):
        evaluate(FakeGenerator("gray"), ["faithfulness"], None, {"samples_per_promt": 4})


def test_prompt_set_is_fixed_versioned_and_deterministic():
    ps = load_prompt_set()
    assert ps["version"] == PROMPT_SET_VERSION and ps["total"] >= 200
    counts = {len(e["attributes"]) for e in ps["prompts"]}
    assert counts == {1, 2, 3, 4, 5}
    assert json.loads(open(ps["path"], encoding="utf-8").read()) == build_prompt_set()  # regenerates bit for bit


# ---------------------------------------------------------------------------------------------- probe
def test_shipped_probe_reads_real_test_images():
    probe, cfg = load_probe()
    assert cfg["weights_sha256"] and set(cfg["test_accuracy"]["per_attribute"]) == set(ATTRIBUTES)
    assert cfg["version"] == PROBE_VERSION  # the shipped weights are the version the code names
    ds = ShapesDataset(300, "test", seed=7, cache_dir="")  # a test stream the probe never saw
    pred = probe.predict(ds.images(64))
    for a in ATTRIBUTES:
        acc = float((pred[a].numpy() == ds.labels[a]).mean())
        assert acc >= 0.95, (a, acc)


# ---------------------------------------------------------------------------------------------- shapes benchmark
def test_faithfulness_is_high_for_real_images_and_low_for_gray():
    opts = {**FAST, "num_prompts": 20, "samples_per_prompt": 4}
    gray = evaluate(FakeGenerator("gray"), ["faithfulness"], None, opts)["metrics"]["faithfulness"]
    assert gray["real"]["overall"] > 0.9  # the ceiling row: real images matching each prompt
    assert gray["model"]["overall"] < 0.35
    perfect = evaluate(FakeGenerator("perfect"), ["faithfulness"], None, opts)["metrics"]["faithfulness"]
    assert perfect["model"]["overall"] > 0.9
    proto = gray["protocol"]
    assert proto["samples_per_prompt"] == 4 and proto["num_samples"] == 80 and proto["prompt_set"]["version"] == PROMPT_SET_VERSION
    assert proto["feature_extractor"]["weights_sha256"] == load_probe()[1]["weights_sha256"]


def test_confusion_counts_what_is_read_for_each_named_value():
    prompts = [{"attributes": {"shape": "square", "colour": "red"}}, {"attributes": {"shape": "circle"}}]
    shape, colour = list(ATTRIBUTES["shape"]), list(ATTRIBUTES["colour"])
    # 3 samples per prompt: the squares read as square, star, star; the circles as circle x 3.
    pred = {"shape": np.array([shape.index(v) for v in ("square", "star", "star", "circle", "circle", "circle")]),
            "colour": np.array([colour.index("red")] * 3 + [colour.index("blue")] * 3)}
    pred.update({a: np.zeros(6, dtype=np.int64) for a in ATTRIBUTES if a not in pred})
    res = faithfulness_scores(pred, prompts, 3)
    c = res["confusion"]["shape"]
    assert c["values"] == shape
    counts = np.array(c["counts"])
    assert counts[shape.index("square"), shape.index("square")] == 1 and counts[shape.index("square"), shape.index("star")] == 2
    assert counts[shape.index("circle"), shape.index("circle")] == 3 and counts.sum() == 6
    # Only named readings count: the circle prompt names no colour, so its blue samples are not in the matrix.
    assert np.array(res["confusion"]["colour"]["counts"]).sum() == 3
    assert np.array(res["confusion"]["size"]["counts"]).sum() == 0
    assert res["per_attribute"]["shape"] == pytest.approx(4 / 6)


def test_diversity_of_a_generator_ignoring_its_noise_is_below_real():
    res = evaluate(FakeGenerator("collapsed"), ["diversity", "feature_diversity"], None,
                   {**FAST, "num_prompts": 20, "samples_per_prompt": 16})["metrics"]
    div = res["diversity"]
    assert div["model"]["coverage"] < 0.5 * div["real"]["coverage"]
    assert div["model"]["entropy"] < 0.05 < 0.5 < div["real"]["entropy"]
    assert set(div["model"]["per_attribute"]) == set(ATTRIBUTES)
    assert res["feature_diversity"]["model"]["value"] < 1e-4 < res["feature_diversity"]["real"]["value"]


def test_probe_fid_small_for_real_vs_real_large_for_noise_and_refuses_few_samples():
    probe, _ = load_probe()
    gen = torch.Generator().manual_seed(0)
    a = ShapesDataset(300, "test", seed=11, cache_dir="").images(64)
    b = ShapesDataset(300, "test", seed=12, cache_dir="").images(64)
    noise = torch.randint(0, 256, a.shape, dtype=torch.uint8, generator=gen)
    real_vs_real, real_vs_noise = frechet_distances(ProbeFeatures(probe), a, [b, noise])
    assert real_vs_real * 20 < real_vs_noise, (real_vs_real, real_vs_noise)
    with pytest.raises(MetricError, match="at least 256 samples"):
        evaluate(FakeGenerator("perfect"), ["probe_fid"], None, {**FAST, "num_prompts": 4, "samples_per_prompt": 16})


def test_eval_cli_on_tiny_pipeline_writes_json_markdown_and_figure(tiny_pipeline_dir, tmp_path, capsys):
    from stackgan.cli import main

    out = tmp_path / "eval"
    rc = main(["eval", "--model", str(tiny_pipeline_dir), "--metrics", "faithfulness,diversity,probe_fid",
               "--out", str(out), "--num-prompts", "16", "--samples-per-prompt", "16", "--seed", "3"])
    assert rc == 0
    for f in ("metrics.json", "metrics.md", "metrics.png", "confusion.png"):
        assert (out / f).stat().st_size > 100
    report = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    proto = report["metrics"]["probe_fid"]["protocol"]
    assert proto["model_resolution"] == 32 and proto["resize_mode"].startswith("32 px ->")  # resized to the probe's 64 px
    assert proto["seed"] == 3 and proto["num_samples"] == 256
    assert "not comparable with Inception FID" in report["metrics"]["probe_fid"]["label"]
    md = (out / "metrics.md").read_text(encoding="utf-8")
    assert "real images (ceiling)" in md and "probe-FID" in md
    assert "real images (ceiling)" in capsys.readouterr().out
    assert main(["eval", "--model", str(tiny_pipeline_dir), "--metrics", "faithfulness,nope", "--out", str(out)]) == 2
    assert "known metrics" in capsys.readouterr().err


def test_eval_records_candidate_sampling(tiny_pipeline_dir, tmp_path, capsys):
    from stackgan.cli import main

    out = tmp_path / "eval"
    assert main(["eval", "--model", str(tiny_pipeline_dir), "--metrics", "faithfulness", "--out", str(out),
                 "--num-prompts", "4", "--samples-per-prompt", "4", "--candidates", "3", "--diversity", "0.25"]) == 0
    proto = json.loads((out / "metrics.json").read_text(encoding="utf-8"))["metrics"]["faithfulness"]["protocol"]
    assert proto["sampling"] == {"candidates": 3, "diversity": 0.25} and proto["num_samples"] == 16
    assert "sampling: 3 candidates per kept sample, diversity 0.25" in (out / "metrics.md").read_text(encoding="utf-8")
    assert main(["eval", "--model", str(tiny_pipeline_dir), "--out", str(out), "--candidates", "0"]) == 2
    assert "candidates must be an integer in [1, 16]" in capsys.readouterr().err
    # left out, the model's own: the tiny model declares none, so plain sampling, and the protocol says why
    assert main(["eval", "--model", str(tiny_pipeline_dir), "--metrics", "faithfulness", "--out", str(out),
                 "--num-prompts", "4", "--samples-per-prompt", "4"]) == 0
    proto = json.loads((out / "metrics.json").read_text(encoding="utf-8"))["metrics"]["faithfulness"]["protocol"]
    assert proto["sampling"] == "plain" and proto["sampling_from"] == "the default for models that declare none"


def test_eval_uses_the_sampling_a_model_declares(tiny_pipeline_dir, tmp_path):
    import shutil

    from stackgan.cli import main

    model = tmp_path / "declared"
    shutil.copytree(tiny_pipeline_dir, model)
    index = json.loads((model / "model_index.json").read_text(encoding="utf-8"))
    index["info"]["sampling"] = {"candidates": 3, "diversity": 0.25}
    (model / "model_index.json").write_text(json.dumps(index), encoding="utf-8")
    args = ["eval", "--model", str(model), "--metrics", "faithfulness", "--num-prompts", "4", "--samples-per-prompt", "4"]
    assert main([*args, "--out", str(tmp_path / "own")]) == 0
    assert main([*args, "--candidates", "1", "--out", str(tmp_path / "plain")]) == 0
    own, plain = (json.loads((tmp_path / d / "metrics.json").read_text(encoding="utf-8"))["metrics"]["faithfulness"]["protocol"]
                  for d in ("own", "plain"))
    assert own["sampling"] == {"candidates": 3, "diversity": 0.25} and own["sampling_from"].startswith("the model, model_index.json")
    assert "; set by the model, model_index.json info.sampling" in (tmp_path / "own" / "metrics.md").read_text(encoding="utf-8")
    assert plain["sampling"] == "plain" and plain["sampling_from"].endswith("with the command line's")


# ---------------------------------------------------------------------------------------------- standard metrics
def test_standard_metrics_name_the_missing_weights():
    gen = FakeGenerator("perfect")
    with pytest.raises(MetricError, match="weights-inception-2015-12-05-6726825d.pth"):
        evaluate(gen, ["fid"], None, FAST)
    with pytest.raises(MetricError, match="does not exist"):
        evaluate(gen, ["inception_score"], None, {**FAST, "inception_weights": "/nowhere/pt_inception.pth"})
    with pytest.raises(MetricError, match="--clip-model"):
        evaluate(gen, ["clip_score"], None, FAST)
    with pytest.raises(MetricError, match="open_clip_model.safetensors"):
        evaluate(gen, ["clip_r_precision"], None, {**FAST, "clip_model": "ViT-B-32"})
    with pytest.raises(MetricError, match="alexnet-owt-7be5be79.pth"):
        evaluate(gen, ["lpips_diversity"], None, FAST)
    with pytest.raises(MetricError, match=r"at least 128 samples \(2 x 64 features\)"):
        evaluate(gen, ["kid"], None, {**FAST, "num_prompts": 4, "extra": {"inception_module": TinyInception()}})


def test_clip_score_r_precision_and_clip_feature_diversity_with_local_weights(tmp_path):
    from stackgan.text.encoder import load_text_encoder, save_text_encoder

    torch.manual_seed(0)
    folder = save_text_encoder(load_text_encoder("shapes-clip-tiny"), tmp_path / "clip")  # random weights, saved locally
    opts = {**FAST, "num_prompts": 12, "samples_per_prompt": 4, "clip_model": f"local-dir:{folder}", "feature_space": "clip"}
    res = evaluate(FakeGenerator("perfect"), ["clip_score", "clip_r_precision", "feature_diversity"], tmp_path / "out", opts)
    m = res["metrics"]
    for row in ("model", "real"):
        assert 0 <= m["clip_score"][row]["value"] <= 100
        assert 0 <= m["clip_r_precision"][row]["value"] <= 1
        assert m["feature_diversity"][row]["value"] >= 0
    assert m["clip_r_precision"]["protocol"]["mean_candidates"] > 1
    assert m["clip_score"]["protocol"]["feature_extractor"]["weights_sha256"]
    assert (tmp_path / "out" / "metrics.png").exists()


def test_lpips_diversity_with_local_backbone_weights(tmp_path):
    import torchvision

    torch.manual_seed(0)
    feats = torchvision.models.alexnet(weights=None).features.state_dict()
    path = tmp_path / "alexnet-features.pth"
    torch.save({f"features.{k}": v for k, v in feats.items()}, path)
    opts = {**FAST, "num_prompts": 6, "samples_per_prompt": 4, "lpips_weights": str(path)}
    res = evaluate(FakeGenerator("collapsed"), ["lpips_diversity"], None, opts)["metrics"]["lpips_diversity"]
    assert res["model"]["value"] < 1e-6 < res["real"]["value"]  # identical samples: zero perceptual distance
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "wrong.pth")
    with pytest.raises(MetricError, match="lacks"):
        evaluate(FakeGenerator("collapsed"), ["lpips_diversity"], None, {**opts, "lpips_weights": str(tmp_path / "wrong.pth")})


class TinyInception(torch.nn.Module):
    """Stands in for the FID Inception: uint8 images -> [B, 64] features, with an fc layer for the logits."""

    num_features = 64

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 64, 8, stride=8)
        self.fc = torch.nn.Linear(64, 1008)

    def forward(self, x):
        return self.conv(x.float() / 127.5 - 1).relu().mean((2, 3))


def test_fid_kid_inception_score_code_paths_with_a_custom_feature_module():
    opts = {**FAST, "num_prompts": 8, "samples_per_prompt": 4, "fid_min_factor": 0.0,
            "extra": {"inception_module": TinyInception()}}
    m = evaluate(FakeGenerator("noise"), ["fid", "kid", "inception_score", "feature_diversity"], None,
                 {**opts, "feature_space": "inception"})["metrics"]
    assert m["fid"]["model"]["value"] > m["fid"]["real"]["value"] >= 0
    assert m["kid"]["model"]["value"] > m["kid"]["real"]["value"]
    assert m["inception_score"]["model"]["value"] >= 1.0
    assert m["fid"]["protocol"]["feature_extractor"]["name"].startswith("custom module")


def test_inception_score_with_a_saved_random_weights_fid_inception(tmp_path, monkeypatch):
    """The real loading path: torch-fidelity's FID Inception built from a local weights file (random weights here).

    FID itself runs in the test above (its 2048 x 2048 matrix square root is slow on 2 cores)."""
    tfi = pytest.importorskip("torch_fidelity.feature_extractor_inceptionv3")
    with monkeypatch.context() as mp:  # build the network without its download and save random weights
        mp.setattr(tfi, "load_state_dict_from_url", lambda *a, **k: {})
        mp.setattr(tfi.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd, *a, **k: None)
        torch.manual_seed(0)
        net = tfi.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    path = tmp_path / "weights-inception-2015-12-05-6726825d.pth"
    torch.save(net.state_dict(), path)
    opts = {**FAST, "num_prompts": 1, "samples_per_prompt": 2, "inception_weights": str(path)}
    m = evaluate(FakeGenerator("noise"), ["inception_score"], None, opts)["metrics"]
    assert np.isfinite(m["inception_score"]["model"]["value"]) and m["inception_score"]["model"]["value"] >= 1.0
    fe = m["inception_score"]["protocol"]["feature_extractor"]
    assert fe["weights_sha256"] and "299" in fe["resize_mode"]
