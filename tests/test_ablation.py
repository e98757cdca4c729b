"""The shapes ablation script trains and evaluates each variant and tabulates them."""

import json

from benchmarks.ablation_shapes import main

TINY = ["data.size=40", "data.test_size=8", "text.train_steps=0", "train.batch_size=8", "train.group_size=4",
        "train.grid_captions=2", "train.grid_samples=2", "train.log_every=1"]


def test_two_variants_end_to_end(tmp_path):
    args = ["--out", str(tmp_path), "--config", "configs/shapes-tiny.yaml", "--steps", "2", "--variants", "none,mbstd",
            "--num-prompts", "4", "--metrics", "faithfulness,diversity", *TINY]
    assert main(args) == 0
    r = json.loads((tmp_path / "ablation.json").read_text(encoding="utf-8"))
    assert [row["variant"] for row in r["rows"]] == ["none", "mbstd"]
    for row in r["rows"]:
        assert 0 <= row["faithfulness"] <= 1 and 0 <= row["coverage"] <= 1 and row["real"]["faithfulness"] > 0.9
        assert (tmp_path / row["grid"]).exists()
    cfg = (tmp_path / "mbstd" / "config.yaml").read_text(encoding="utf-8")
    assert "d1_minibatch: mbstd" in cfg and "max_steps: 2" in cfg
    md = (tmp_path / "ablation.md").read_text(encoding="utf-8")
    assert "real images (ceiling)" in md and "`mbstd`" in md and (tmp_path / "ablation.png").stat().st_size > 0
    # A second call reuses the finished runs and evaluations.
    before = (tmp_path / "none" / "eval" / "metrics.json").stat().st_mtime
    assert main(args) == 0
    assert (tmp_path / "none" / "eval" / "metrics.json").stat().st_mtime == before
