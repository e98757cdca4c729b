"""Contrastive training of the text encoder: batches with hard negatives, and their errors."""

from __future__ import annotations

import random

import pytest
import torch

from stackgan.data.shapes import ShapesDataset
from stackgan.text.train import _batch_drawer, attribute_readout, train_text_encoder


@pytest.fixture(scope="module")
def shapes_300():
    return ShapesDataset(300, split="train", cache_dir="")


def test_grouped_batches_hold_groups_that_share_the_named_attributes(shapes_300):
    draw = _batch_drawer(shapes_300, random.Random(0), 32, ("colour", "background"), 4)
    for _ in range(5):
        idx = draw()
        assert len(idx) == 32
        for g in range(0, 16, 4):  # the first half: groups of 4
            group = [shapes_300.attributes(i) for i in idx[g : g + 4]]
            assert len({(a.colour, a.background) for a in group}) == 1
            assert len(set(idx[g : g + 4])) == 4  # four different images
    # The grouped half really is grouped, unlike plain random batches of the same size.
    plain = _batch_drawer(shapes_300, random.Random(0), 32, (), 4)()
    pairs = sum(shapes_300.attributes(plain[g]).colour == shapes_300.attributes(plain[g + 1]).colour for g in range(0, 16, 4))
    assert pairs < 4


def test_grouped_batches_explain_what_is_wrong(shapes_300):
    with pytest.raises(ValueError, match="unknown attributes \\['hue'\\]"):
        _batch_drawer(shapes_300, random.Random(0), 32, ("hue",), 4)
    with pytest.raises(ValueError, match="group size"):
        _batch_drawer(shapes_300, random.Random(0), 32, ("colour",), 17)
    with pytest.raises(ValueError, match="no 40 images share"):
        _batch_drawer(shapes_300, random.Random(0), 128, tuple(["shape", "colour", "size", "position", "background"]), 40)

    class NoLabels:
        def __len__(self):
            return 10

    with pytest.raises(ValueError, match="needs a data set with attribute labels"):
        _batch_drawer(NoLabels(), random.Random(0), 8, ("colour",), 2)


def test_text_encoder_trains_with_grouped_batches(shapes_300, tmp_path):
    enc = train_text_encoder(shapes_300, "shapes-clip-tiny", 2, 16, 1e-3, 0, tmp_path / "enc", progress=False,
                             group_by=["colour"], group_size=4)
    assert enc.encode(["a red circle"]).shape == (1, enc.dim)
    assert (tmp_path / "enc" / "open_clip_model.safetensors").exists()


def test_attribute_readout_reports_every_attribute(shapes_300, tmp_path):
    from stackgan.data.shapes import ATTRIBUTES

    enc = train_text_encoder(shapes_300, "shapes-clip-tiny", 1, 16, 1e-3, 0, None, progress=False)
    out = attribute_readout(enc, shapes_300, images=60)
    assert set(out) == set(ATTRIBUTES)
    for name, row in out.items():
        assert 0.0 <= row["zero_shot"] <= 1.0
        assert row["chance"] == pytest.approx(1 / len(ATTRIBUTES[name]))
        assert -1.0 <= row["text_cosine"] <= 1.0


def test_resnet_tower_config_trains_and_reloads(shapes_300, tmp_path):
    """The shapes preset's encoder (ResNet image tower at 64 px) builds, trains a step and loads back."""
    enc = train_text_encoder(shapes_300, "shapes-clip-resnet", 1, 8, 1e-3, 0, tmp_path / "enc", progress=False,
                             group_by=["colour", "background"], group_size=2)
    assert type(enc.model.visual).__name__ == "ModifiedResNet"
    assert enc.encode_images(shapes_300.images(64)[:2]).shape == (2, enc.dim)


@pytest.mark.parametrize("model", ["shapes-clip-tiny", "shapes-clip-resnet"])  # a ViT tower and a ResNet tower
def test_image_map_is_a_frozen_differentiable_4x4_feature_map(model):
    from stackgan.text import load_text_encoder

    torch.manual_seed(0)
    enc = load_text_encoder(model)
    images = (torch.rand(3, 3, 32, 32) * 2 - 1).requires_grad_(True)
    last, earlier = enc.image_map(images, -1), enc.image_map(images, 0)
    assert last.shape[0] == 3 and last.shape[2:] == (4, 4) and earlier.shape[2:] == (4, 4)
    last.square().sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert all(p.grad is None for p in enc.model.parameters())  # the tower's weights stay frozen
    torch.testing.assert_close(enc.image_map(images.detach()[:1], -1), last[:1].detach(), rtol=1e-4, atol=1e-5)
