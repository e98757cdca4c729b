"""Two training steps on a tiny version of every data layout, and fine-tuning from a pipeline."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_data_formats import build_coco, build_cub, build_flowers, build_messy_imagefolder, rgb

from stackgan.config import load_config
from stackgan.pipeline import StackGANPipeline
from stackgan.training.loop import train

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "shapes-tiny.yaml"
FAST = ["text.train_steps=0", "train.stages=[1]", "train.max_steps=2", "train.batch_size=4", "train.group_size=2",
        "train.grid_captions=2", "train.grid_samples=2", "train.checkpoint_every=2", "train.log_every=1"]


def _txt_pairs(root: Path) -> Path:
    for k, colour in enumerate([(200, 0, 0), (0, 0, 200), (0, 150, 0), (200, 200, 0)]):
        rgb(root / f"img{k}.png", (40, 40), color=colour)
        (root / f"img{k}.txt").write_text(f"a picture number {k}\nanother caption {k}\n", encoding="utf-8")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"x" * 40)
    (root / "broken.txt").write_text("caption of a broken file\n", encoding="utf-8")
    return root


def _build(layout: str, root: Path) -> Path:
    if layout == "imagefolder":
        return build_messy_imagefolder(root)
    if layout == "txt":
        return _txt_pairs(root)
    if layout == "cub":
        build_cub(root)
        return root
    if layout == "flowers":
        build_flowers(root, n_classes=5, per_class=2)
        return root
    build_coco(root)
    return root


@pytest.mark.parametrize("layout", ["imagefolder", "txt", "cub", "flowers", "coco"])
def test_two_steps_on_every_layout(layout, tmp_path):
    data = _build(layout, tmp_path / "data")
    cfg = load_config(TINY, ["data.name=folder", f"data.path={data}", *FAST])
    pipeline = train(cfg, tmp_path / "run")
    log = (tmp_path / "run" / "train.log").read_text(encoding="utf-8")
    assert "stage 1 step 2" in log
    if layout in ("imagefolder", "txt", "coco"):  # these fixtures hold broken or caption-less files
        assert "skipped" in log
    pipe = StackGANPipeline.from_pretrained(pipeline)
    assert pipe("a picture", num_images_per_prompt=2, seed=0, stage=1, output_type="pt").images.shape[0] == 2


def test_finetune_from_a_pipeline_keeps_its_encoder_and_architecture(tiny_pipeline_dir, tmp_path):
    data = _txt_pairs(tmp_path / "data")
    cfg = load_config(ROOT / "configs" / "finetune.yaml",
                      [f"data.path={data}", "train.max_steps=2", "train.stage2_steps=2", "train.batch_size=4", "train.group_size=2",
                       "train.grid_captions=2", "train.grid_samples=2", "train.mixed_precision=no"])
    out = train(cfg, tmp_path / "run", init_from=str(tiny_pipeline_dir))
    init, tuned = StackGANPipeline.from_pretrained(tiny_pipeline_dir), StackGANPipeline.from_pretrained(out)
    assert tuned.text_encoder.identity == init.text_encoder.identity
    assert tuned.resolution == init.resolution and tuned.stage1.z_dim == init.stage1.z_dim
    a, b = init.stage1.state_dict(), tuned.stage1.state_dict()
    assert any((a[k].float() - b[k].float()).abs().max() > 0 for k in a)  # the weights did move


def test_caption_cache_key_of_a_folder_is_the_same_in_every_process(tmp_path):
    """The embedding cache of a user folder is found again by the next run (another process)."""
    import os
    import subprocess
    import sys

    data = _txt_pairs(tmp_path / "data")
    code = ("from stackgan.config import load_config; from stackgan.data import build_dataset; "
            "from stackgan.training.loop import _dataset_key; "
            f"cfg = load_config({str(TINY)!r}, ['data.name=folder', 'data.path={data}']); "
            "print(_dataset_key(cfg, build_dataset(cfg.data, 'train')))")
    keys = {subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": seed}, capture_output=True,
                           text=True, check=True).stdout.strip().splitlines()[-1] for seed in ("1", "2")}
    assert len(keys) == 1 and keys.pop().startswith("data-")
