"""The speed benchmark's quick mode runs every section and writes a complete bench.json."""

import json

import pytest

from benchmarks.__main__ import main, to_markdown, training_loop_config


def test_quick_benchmark_writes_every_section(tmp_path):
    assert main(["--out", str(tmp_path), "--quick"]) == 0
    r = json.loads((tmp_path / "bench.json").read_text(encoding="utf-8"))
    assert {"machine", "matmul_gflops", "generation", "bundled_call", "training", "training_loop", "text", "precision"} <= set(r)
    b = r["bundled_call"]
    assert b["plain_ms"] > 0 and b["optimised_ms"] > 0
    assert (b["bf16_ms"] is not None) == r["machine"]["native_bf16"]  # both stages in bf16: timed where it is native
    assert r["matmul_gflops"]["fp32"] > 0 and r["floor_rate_gflops"] > 0
    for g in r["generation"]:
        assert g["baseline_ms_per_image"] > 0 and g["best_ms_per_image"] > 0 and g["gflop_per_image"] > 0
        assert g["ratio_to_floor"] > 0
        # the upsampling blocks run as transposed convolutions: fewer multiply-adds, same images
        assert 0 < g["executed_gflop_per_image"] < g["gflop_per_image"] and g["ratio_to_executed_floor"] > g["ratio_to_floor"]
    assert r["training_loop"]["img_per_s_fp32"] > 0
    assert all(g["no_deconv_ms_per_image"] is None for g in r["generation"])  # --quick skips the batch-8 extras
    for t in r["training"]:
        assert t["img_per_s_fp32"] > 0
        assert t["img_per_s_bf16"] is None or t["img_per_s_bf16"] > 0
    md = (tmp_path / "bench.md").read_text(encoding="utf-8")
    q = r["precision"]
    assert q["samples"] == 4 and 0 <= q["mean_abs_diff_uint8"] < 255 and 0 <= q["probe_same_all_attributes"] <= 1
    # both reduced-precision paths measured; the top-level figures are the served one's
    assert set(q["paths"]) == {"bf16-stage2", "bf16"} and q["served"] == "bf16-stage2"
    assert q["mean_abs_diff_uint8"] == q["paths"]["bf16-stage2"]["mean_abs_diff_uint8"]
    assert q["paths"]["bf16-stage2"]["mean_abs_diff_uint8"] <= q["paths"]["bf16"]["mean_abs_diff_uint8"]
    # the float32 sensitivity reference: a nudge of the noise moves pixels, and more for the larger nudge
    nudged = q["fp32_sensitivity"]
    assert [row["noise_scale"] for row in nudged] == [1.001, 1.003]
    assert 0 < nudged[0]["mean_abs_diff_uint8"] < nudged[1]["mean_abs_diff_uint8"]
    assert "own sensitivity" in md
    assert md == to_markdown(r) and "nan" not in md and "stackgan.training.train" in md and "Reduced precision against plain float32" in md and "bf16-stage2 (what `optimize()` serves)" in md


@pytest.mark.parametrize("quick", [True, False])
def test_training_loop_config_loads_from_both_presets(quick):
    # the full run cuts configs/shapes.yaml down to the bare step's models: a setting the preset
    # gains (the variety term needs the classifier) must be cut with it, or the run stops there
    cfg, steps, window = training_loop_config(quick)
    assert cfg.model.d_aux == [] and cfg.train.aux_spread == 0 and cfg.train.clip_weight == 0
    assert cfg.train.stages == [1] and cfg.train.max_steps == steps and steps > window > 0


def test_tower_vs_probe_shares_and_a_run_on_a_tiny_pipeline(tiny_pipeline_dir, tmp_path):
    import numpy as np

    from benchmarks.tower_vs_probe import main as tvp_main
    from benchmarks.tower_vs_probe import shares

    # Named circle, circle, star; the tower reads circle, star, star; the probe circle, circle, circle.
    s = shares(np.array([0, 0, 5]), np.array([0, 5, 5]), np.array([0, 0, 0]))
    assert s["circle"] == {"n": 2, "tower": 0.5, "probe": 1.0} and s["star"] == {"n": 1, "tower": 1.0, "probe": 0.0}
    assert s["all"]["tower"] == 2 / 3 and s["all"]["probe"] == 2 / 3 and "square" not in s
    tvp_main(["--model", str(tiny_pipeline_dir), "--num-prompts", "24", "--samples-per-prompt", "2", "--out", str(tmp_path)])
    r = json.loads((tmp_path / "tower_vs_probe.json").read_text(encoding="utf-8"))
    n = 2 * r["prompts"]
    assert 0 < r["prompts"] <= 24 and r["generated"]["all"]["n"] == n == r["real"]["all"]["n"]
    assert sum(v["n"] for k, v in r["generated"].items() if k != "all") == n
    assert r["real"]["all"]["probe"] > 0.9  # the probe reads real images (the tiny random tower reads them at chance)
    assert "| all |" in (tmp_path / "tower_vs_probe.md").read_text(encoding="utf-8")


def test_tower_vs_probe_refuses_an_encoder_without_an_image_tower(monkeypatch):
    import pytest
    from conftest import make_tiny_pipeline

    from benchmarks.tower_vs_probe import tower_vs_probe
    from stackgan.text.encoder import TextEncoder

    monkeypatch.setattr(TextEncoder, "has_image_tower", property(lambda self: False))
    with pytest.raises(ValueError, match="has no image tower"):
        tower_vs_probe(make_tiny_pipeline(), samples_per_prompt=2, num_prompts=4)


def test_app_latency_records_the_app_process_memory(tiny_pipeline_dir, tmp_path):
    from benchmarks.app_latency import main as latency_main

    assert latency_main(["--model", str(tiny_pipeline_dir), "--runs", "1", "--browser-runs", "0",
                         "--samples", "2", "--out", str(tmp_path)]) == 0
    r = json.loads((tmp_path / "app_latency.json").read_text(encoding="utf-8"))
    assert r["pipeline"]["runs"] == 1 and r["server"]["median_s"] > 0 and "browser" not in r
    mem = r["memory_mib"]
    assert 0 < mem["after_load"]["rss_mib"] and 0 < mem["after_requests"]["rss_mib"] <= mem["after_requests"]["peak_rss_mib"]
