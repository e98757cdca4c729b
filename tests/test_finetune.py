"""Fine-tuning from a pipeline folder: a frozen stage I, and a text encoder of another size."""

from pathlib import Path

import pytest
import torch

from stackgan.config import ConfigError, load_config
from stackgan.pipeline import StackGANPipeline
from stackgan.training.loop import train

TINY = Path(__file__).resolve().parents[1] / "configs" / "shapes-tiny.yaml"
FAST = ["data.size=24", "data.test_size=8", "train.batch_size=4", "train.group_size=2", "train.grid_captions=2",
        "train.grid_samples=2", "train.log_every=1", "train.snapshot_every=100", "train.checkpoint_every=100"]


def _params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def test_freeze_stage1_keeps_stage1_bit_for_bit_and_trains_stage2(tiny_pipeline_dir, tmp_path):
    cfg = load_config(TINY, [*FAST, "text.model=init", "train.max_steps=2"])
    out = train(cfg, tmp_path / "run", init_from=str(tiny_pipeline_dir), freeze_stage1=True)
    init, tuned = StackGANPipeline.from_pretrained(tiny_pipeline_dir), StackGANPipeline.from_pretrained(out)
    a, b = init.stage1.state_dict(), tuned.stage1.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not (tmp_path / "run" / "stages" / "stage1").exists()  # stage I was never trained
    a2, b2 = _params(init.stage2), _params(tuned.stage2)
    assert any(not torch.equal(a2[k], b2[k]) for k in a2)


def test_freeze_stage1_needs_an_init_pipeline(tmp_path):
    cfg = load_config(TINY, [*FAST, "train.max_steps=1"])
    with pytest.raises(ConfigError, match="--freeze-stage1 needs --init-from"):
        train(cfg, tmp_path / "run", freeze_stage1=True)


def test_reinit_text_projection_swaps_encoder_and_keeps_the_rest(tiny_pipeline_dir, tmp_path):
    """A 128-d encoder on a 64-d pipeline: only the conditioning-augmentation layers start afresh.

    With a learning rate of 1e-9 one Adam step moves a weight by about 1e-9, so every kept
    weight stays equal to the init pipeline's to 1e-6 while the re-initialised ones do not."""
    cfg = load_config(TINY, [*FAST, "text.model=shapes-clip-small", "text.train_steps=0", "train.max_steps=1",
                             "train.lr_g=1e-9", "train.lr_d=1e-9"])
    out = train(cfg, tmp_path / "run", init_from=str(tiny_pipeline_dir), reinit_text_projection=True)
    init, tuned = StackGANPipeline.from_pretrained(tiny_pipeline_dir), StackGANPipeline.from_pretrained(out)
    assert init.text_encoder.dim == 64 and tuned.text_encoder.dim == 128
    assert tuned.stage1.text_dim == 128 and tuned.stage2.text_dim == 128
    for g_init, g_tuned in ((init.stage1, tuned.stage1), (init.stage2, tuned.stage2)):
        a, b = _params(g_init), _params(g_tuned)
        assert a.keys() == b.keys()
        kept = [k for k in a if not k.startswith("ca.")]
        assert kept and all((a[k] - b[k]).abs().max() < 1e-6 for k in kept)
        assert b["ca.fc.weight"].shape == (a["ca.fc.weight"].shape[0], 128)
    assert tuned("a red circle", num_images_per_prompt=2, seed=0, output_type="pt").images.shape[0] == 2


def test_reinit_text_projection_cannot_keep_a_frozen_stage1(tiny_pipeline_dir, tmp_path):
    cfg = load_config(TINY, [*FAST, "text.model=shapes-clip-small", "text.train_steps=0", "train.max_steps=1"])
    with pytest.raises(ConfigError, match="cannot be kept as it is.*Drop --freeze-stage1"):
        train(cfg, tmp_path / "run", init_from=str(tiny_pipeline_dir), freeze_stage1=True, reinit_text_projection=True)
