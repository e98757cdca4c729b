"""The discriminators' auxiliary attribute classifier (`model.d_aux`, AC-GAN style) on `shapes`."""

from __future__ import annotations

import pytest
import torch
from test_training import metrics, small_cfg, stage1_cfg

from stackgan.config import ConfigError
from stackgan.data import build_dataset
from stackgan.data.shapes import ATTRIBUTES
from stackgan.models.stage1 import Stage1Discriminator
from stackgan.models.stage2 import Stage2Discriminator
from stackgan.training import loop
from stackgan.training.data import CaptionTable
from stackgan.training.loop import aux_accuracy, aux_targets, build_models, train
from stackgan.training.losses import aux_loss, aux_spread_loss


@pytest.mark.parametrize("cond", ["projection", "concat"])
def test_discriminators_return_aux_logits_for_real_and_fake(cond):
    torch.manual_seed(0)
    for D in (Stage1Discriminator(12, 8, df=8, resolution=16, minibatch="mbstd", norm="spectral", cond=cond,
                                  aux_classes=9),
              Stage2Discriminator(12, 8, df=8, resolution=32, minibatch="none", norm="batch", cond=cond,
                                  aux_classes=9)):
        res = D.resolution
        out = D(torch.randn(4, 12), real=torch.rand(4, 3, res, res) * 2 - 1, fake=torch.rand(4, 3, res, res) * 2 - 1,
                group=2)
        assert out["real_aux"].shape == out["fake_aux"].shape == (4, 9)
        assert not torch.allclose(out["real_aux"], out["fake_aux"])  # read from each image, not a constant
    plain = Stage1Discriminator(12, 8, df=8, resolution=16, minibatch="none", norm="batch", cond=cond)
    assert "real_aux" not in plain(torch.randn(2, 12), real=torch.zeros(2, 3, 16, 16))


def test_build_models_sizes_the_classifier_from_the_named_attributes():
    cfg = small_cfg("model.d_aux=[shape,size]")
    for stage in (1, 2):
        _, D = build_models(cfg, stage, text_dim=16)
        assert D.head.aux_out.out_features == len(ATTRIBUTES["shape"]) + len(ATTRIBUTES["size"])
    assert build_models(small_cfg(), 1, text_dim=16)[1].head.aux_out is None


def test_aux_targets_are_true_labels_and_named_values():
    cfg = small_cfg("model.d_aux=[shape,colour]")
    data = build_dataset(cfg.data, "train")
    table = CaptionTable.build(data)
    images, captions = aux_targets(cfg, data, table)
    assert images.shape == (len(data), 2) and captions.shape == (len(table.texts), 2)
    for i in range(len(data)):
        a = data.attributes(i)
        assert images[i].tolist() == [ATTRIBUTES["shape"].index(a.shape), ATTRIBUTES["colour"].index(a.colour)]
        for c, named in zip(table.per_image[i], data.caption_attributes(i)):
            want = [ATTRIBUTES[k].index(named[k]) if k in named else -1 for k in ("shape", "colour")]
            assert captions[c].tolist() == want
    assert (captions == -1).any() and (captions >= 0).any()  # captions leave attributes out at random


def test_aux_loss_and_accuracy_skip_unnamed_attributes():
    sizes = [6, 3]  # e.g. shape and size
    logits = torch.full((2, 9), -10.0)
    logits[0, 2] = logits[0, 6 + 1] = 10.0  # sample 0 reads shape 2, size 1
    logits[1, 4] = logits[1, 6 + 0] = 10.0  # sample 1 reads shape 4, size 0
    right = torch.tensor([[2, 1], [4, -1]])
    assert aux_loss(logits, right, sizes).item() < 1e-6
    assert aux_accuracy(logits, right, sizes) == 1.0
    wrong = torch.tensor([[2, 0], [-1, -1]])  # size of sample 0 wrong, sample 1 names nothing
    assert aux_loss(logits, wrong, sizes).item() > 10
    assert aux_accuracy(logits, wrong, sizes) == 0.5
    assert aux_loss(logits, torch.full((2, 2), -1), sizes).item() == 0.0


def test_training_feeds_true_labels_to_d_and_named_values_to_g(tmp_path, monkeypatch):
    calls = []
    real_loss = loop.aux_loss

    def spy(logits, targets, sizes, *args):
        calls.append(targets.clone())
        return real_loss(logits, targets, sizes, *args)

    monkeypatch.setattr(loop, "aux_loss", spy)
    cfg = stage1_cfg("train.max_steps=1", "model.d_aux=[shape]")
    train(cfg, tmp_path / "run")
    d_targets, g_targets = calls
    assert d_targets.shape == g_targets.shape == (cfg.train.batch_size, 1)
    assert (d_targets >= 0).all()  # every real image has its true shape
    # Each group's real images match what the group's caption names, so where the caption names
    # the shape, G's target is the real images' shape.
    named = g_targets[:, 0] >= 0
    assert torch.equal(g_targets[named, 0], d_targets[named, 0])
    assert set(d_targets[:, 0].tolist()) <= set(range(len(ATTRIBUTES["shape"])))
    row = metrics(tmp_path / "run")[0]
    assert 0 <= row["aux_acc_real"] <= 1 and 0 <= row["aux_acc_fake"] <= 1


def test_d_aux_is_checked():
    with pytest.raises(ConfigError, match="model.d_aux must name distinct attributes among"):
        small_cfg("model.d_aux=[shapes]")
    with pytest.raises(ConfigError, match="model.d_aux must name distinct attributes"):
        small_cfg("model.d_aux=[shape,shape]")
    with pytest.raises(ConfigError, match="model.d_aux needs the attribute labels of the built-in shapes"):
        small_cfg("model.d_aux=[shape]", "data.name=folder", "data.path=/tmp/x")
    with pytest.raises(ConfigError, match="train.aux_weight must be >= 0"):
        small_cfg("model.d_aux=[shape]", "train.aux_weight=-1")


def test_aux_loss_confidence_stops_at_the_named_probability():
    sizes = [3]
    logits = torch.log(torch.tensor([[0.9, 0.05, 0.05], [0.2, 0.5, 0.3]]))
    targets = torch.tensor([[0], [0]])
    plain = aux_loss(logits, targets, sizes)
    assert plain.item() == pytest.approx((-torch.log(torch.tensor(0.9)) - torch.log(torch.tensor(0.2))).item() / 2)
    # At confidence 0.8 sample 0 (p = 0.9) adds nothing; sample 1 (p = 0.2) adds -log 0.2 + log 0.8.
    assert aux_loss(logits, targets, sizes, 0.8).item() == pytest.approx(
        (-torch.log(torch.tensor(0.2)) + torch.log(torch.tensor(0.8))).item() / 2, rel=1e-5)
    assert aux_loss(logits, targets, sizes, 0.1).item() == 0.0  # both above 0.1
    assert aux_loss(logits, torch.tensor([[-1], [-1]]), sizes, 0.8).item() == 0.0


@pytest.mark.parametrize("cond", ["projection", "concat"])
def test_twin_classifier_reads_fakes_only(cond):
    torch.manual_seed(0)
    for D in (Stage1Discriminator(12, 8, df=8, resolution=16, minibatch="mbstd", norm="spectral", cond=cond,
                                  aux_classes=9, aux_twin=True),
              Stage2Discriminator(12, 8, df=8, resolution=32, minibatch="none", norm="batch", cond=cond,
                                  aux_classes=9, aux_twin=True)):
        res = D.resolution
        fake = torch.rand(4, 3, res, res) * 2 - 1
        out = D(torch.randn(4, 12), real=torch.rand(4, 3, res, res) * 2 - 1, fake=fake, group=2)
        assert out["fake_aux_twin"].shape == (4, 9) and "real_aux_twin" not in out
        assert not torch.allclose(out["fake_aux_twin"], out["fake_aux"])  # its own weights
        # The same features as the main classifier, another linear layer: its gradient reaches the encoder.
        out["fake_aux_twin"].sum().backward()
        def has_grad(m):
            return any(q.grad is not None and q.grad.abs().sum() > 0 for q in m.parameters())

        assert has_grad(D.head.aux_twin_out) and has_grad(D.encoder) and not has_grad(D.head.aux_out)
    with pytest.raises(ValueError, match="aux_twin needs an auxiliary classifier"):
        Stage1Discriminator(12, 8, df=8, resolution=16, aux_twin=True)


def test_twin_is_built_from_the_config_and_checked():
    cfg = small_cfg("model.d_aux=[shape,size]", "model.d_aux_twin=true")
    for stage in (1, 2):
        _, D = build_models(cfg, stage, text_dim=16)
        assert D.head.aux_twin_out.out_features == D.head.aux_out.out_features == 9
    assert build_models(small_cfg("model.d_aux=[shape]"), 1, text_dim=16)[1].head.aux_twin_out is None
    with pytest.raises(ConfigError, match="model.d_aux_twin needs the auxiliary classifier"):
        small_cfg("model.d_aux_twin=true")
    for bad in ("-0.1", "1"):
        with pytest.raises(ConfigError, match=r"train.aux_confidence must be in \[0, 1\)"):
            small_cfg("model.d_aux=[shape]", f"train.aux_confidence={bad}")


def test_training_with_the_twin_subtracts_its_loss_from_g(tmp_path, monkeypatch):
    """D: main classifier on the real labels, twin on the fakes' named values; G: main minus twin
    (Gong et al. 2019), with train.aux_confidence on the main term only."""
    calls = []
    real_loss = loop.aux_loss

    def spy(logits, targets, sizes, confidence=0.0):
        loss = real_loss(logits, targets, sizes, confidence)
        calls.append((targets.clone(), confidence, loss.detach()))
        return loss

    monkeypatch.setattr(loop, "aux_loss", spy)
    g_losses = []
    real_g_loss = loop.g_loss
    monkeypatch.setattr(loop, "g_loss", lambda out, kind: g_losses.append(real_g_loss(out, kind)) or g_losses[-1])
    cfg = stage1_cfg("train.max_steps=1", "model.d_aux=[shape]", "model.d_aux_twin=true",
                     "train.aux_confidence=0.5", "train.kl_weight=0", "train.clip_weight=0")
    train(cfg, tmp_path / "run")
    (d_real, c1, _), (d_twin, c2, _), (g_main, c3, main), (g_twin, c4, twin) = calls
    assert (d_real >= 0).all() and torch.equal(d_twin, g_main) and torch.equal(g_main, g_twin)
    assert (c1, c2, c3, c4) == (0.0, 0.0, 0.5, 0.0)
    row = metrics(tmp_path / "run")[0]
    assert row["loss_g"] == pytest.approx((g_losses[-1] + main - twin).item(), rel=1e-4, abs=1e-5)
    assert 0 <= row["aux_twin_acc_fake"] <= 1


def test_aux_spread_rewards_clear_and_different_readings_of_unnamed_attributes():
    sizes = [4]
    sure = torch.eye(4) * 20 - 10  # four samples, each read clearly as another value
    same = sure[[0, 0, 0, 0]]  # all read clearly as value 0
    unsure = torch.zeros(4, 4)  # nothing read clearly
    unnamed = torch.full((4, 1), -1)
    named = torch.zeros(4, 1, dtype=torch.long)
    assert aux_spread_loss(sure, unnamed, sizes, group=4).item() == pytest.approx(-1.0, abs=1e-4)
    assert aux_spread_loss(same, unnamed, sizes, group=4).item() == pytest.approx(0.0, abs=1e-4)
    assert aux_spread_loss(unsure, unnamed, sizes, group=4).item() == pytest.approx(0.0, abs=1e-6)
    assert aux_spread_loss(sure, named, sizes, group=4).item() == 0.0  # a named attribute is aux_loss's
    # Two groups of two, one naming the attribute: only the other counts, and two values are its maximum.
    two = torch.cat([sure[:2], sure[:2]])
    assert aux_spread_loss(two, torch.tensor([[0], [0], [-1], [-1]]), sizes, group=2).item() == pytest.approx(-1.0, abs=1e-4)
    # Several attributes side by side: the sum of each one's term.
    both = torch.cat([sure, same[:, :3]], dim=1)
    assert aux_spread_loss(both, torch.full((4, 2), -1), [4, 3], group=4).item() == pytest.approx(-1.0, abs=1e-4)
    with pytest.raises(ValueError, match="not a whole number of groups"):
        aux_spread_loss(sure[:3], unnamed[:3], sizes, group=2)


def test_aux_spread_is_trained_and_checked(tmp_path):
    with pytest.raises(ConfigError, match="train.aux_spread needs the auxiliary classifier"):
        small_cfg("train.aux_spread=1")
    with pytest.raises(ConfigError, match="train.aux_spread needs the auxiliary classifier"):
        small_cfg("model.d_aux=[shape]", "train.aux_spread=1", "train.group_size=1")
    with pytest.raises(ConfigError, match="train.aux_spread must be >= 0"):
        small_cfg("model.d_aux=[shape]", "train.aux_spread=-1")
    cfg = stage1_cfg("train.max_steps=2", "train.log_every=1", "model.d_aux=[shape,position]", "train.aux_spread=1")
    train(cfg, tmp_path / "run")
    rows = metrics(tmp_path / "run")
    assert all(-2 <= r["aux_spread"] <= 0 for r in rows)
