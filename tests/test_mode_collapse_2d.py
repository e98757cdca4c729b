"""Metric functions of the 2D mixture benchmark, and a --quick run end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from benchmarks import mode_collapse_2d as mc


def test_ring_has_8_distinct_means_on_unit_circle():
    means = mc.MIXTURES["ring"].means_array
    assert means.shape == (8, 2)
    assert len({(round(x, 6), round(y, 6)) for x, y in means}) == 8
    np.testing.assert_allclose(np.linalg.norm(means, axis=1), 1.0)
    assert mc.MIXTURES["ring"].sigma == 0.01


def test_grid_has_25_means_on_lattice():
    means = mc.MIXTURES["grid"].means_array
    assert means.shape == (25, 2)
    assert {tuple(m) for m in means} == {(x, y) for x in (-4.0, -2.0, 0.0, 2.0, 4.0) for y in (-4.0, -2.0, 0.0, 2.0, 4.0)}
    assert mc.MIXTURES["grid"].sigma == 0.05


@pytest.mark.parametrize("name", ["ring", "grid"])
def test_true_mixture_scores_as_perfect(name):
    mix = mc.MIXTURES[name]
    samples = mc.sample_mixture(mix, 20000, torch.Generator().manual_seed(0)).numpy()
    m = mc.mode_metrics(samples, mix.means_array, mix.sigma)
    assert m["modes"] == len(mix.means)
    # P(chi_2 <= 9) = 1 - exp(-4.5) = 98.9% for a 2D Gaussian within 3 sigma (Euclidean).
    assert m["hq"] == pytest.approx(100 * (1 - math.exp(-4.5)), abs=0.5)
    assert m["rev_kl"] < 0.01
    assert sum(m["counts"]) == round(m["hq"] / 100 * len(samples))


@pytest.mark.parametrize("name", ["ring", "grid"])
def test_all_samples_at_one_mode(name):
    mix = mc.MIXTURES[name]
    samples = np.repeat(mix.means_array[3:4], 100, axis=0)
    m = mc.mode_metrics(samples, mix.means_array, mix.sigma)
    assert m["modes"] == 1 and m["hq"] == 100.0
    assert m["rev_kl"] == pytest.approx(math.log(len(mix.means)))


def test_far_samples_are_not_high_quality():
    mix = mc.MIXTURES["ring"]
    samples = np.full((50, 2), 10.0)
    m = mc.mode_metrics(samples, mix.means_array, mix.sigma)
    assert m == {"modes": 0, "hq": 0.0, "rev_kl": None, "counts": [0] * 8}
    # Just outside 3 sigma of a mean is low quality; just inside is high quality.
    edge = np.array([[1.0 + 3.01 * mix.sigma, 0.0], [1.0 + 2.99 * mix.sigma, 0.0]])
    assert mc.mode_metrics(edge, mix.means_array, mix.sigma)["hq"] == 50.0


def test_rev_kl_of_two_equal_modes():
    mix = mc.MIXTURES["grid"]
    samples = np.concatenate([np.repeat(mix.means_array[:1], 10, 0), np.repeat(mix.means_array[1:2], 10, 0)])
    assert mc.mode_metrics(samples, mix.means_array, mix.sigma)["rev_kl"] == pytest.approx(math.log(25) - math.log(2))


def test_mean_se():
    s = mc.mean_se([1.0, 2.0, 3.0, None])
    assert s["mean"] == 2.0 and s["n"] == 3 and s["se"] == pytest.approx(1.0 / math.sqrt(3))
    assert mc.mean_se([None])["mean"] is None


@pytest.mark.parametrize("variant", mc.VARIANTS)
def test_discriminator_shapes(variant):
    g, d = mc.build_models(variant, mc.Protocol(hidden=8, layers=2, mbd_group=4))
    x = g(torch.randn(16, g.z_dim))
    assert x.shape == (16, 2)
    assert d(x).shape == ((8,) if variant == "pacgan2" else (16,))


def test_quick_run_writes_results(tmp_path):
    mc.main(["--out", str(tmp_path), "--quick", "--variants", ",".join(mc.VARIANTS)])
    record = json.loads((tmp_path / "results.json").read_text())
    assert set(record["runs"]) == set(mc.VARIANTS)
    for variant in mc.VARIANTS:
        assert (tmp_path / f"{variant}.png").stat().st_size > 0
        for data in ("ring", "grid"):
            (run,) = record["runs"][variant][data]
            assert 0 <= run["modes"] <= len(mc.MIXTURES[data].means) and 0.0 <= run["hq"] <= 100.0
            assert set(record["summary"][variant][data]) == {"modes", "hq", "rev_kl"}
    proto = record["protocol"]
    assert proto["eval_samples"] > 0 and proto["seeds"] == [0] and proto["torch"] == torch.__version__
    assert "wall time" in (tmp_path / "log.txt").read_text()
    table = (tmp_path / "table.md").read_text()
    assert "PacGAN table: PacGAN4" in table and "ours (1 seeds): mbd" in table


def test_ema_generator_is_the_one_scored():
    import dataclasses

    proto = dataclasses.replace(mc.Protocol(), iters=20, eval_samples=200, snapshots=2, hidden=16)
    plain = mc.train_run("gan", "ring", 0, proto)
    averaged = mc.train_run("gan", "ring", 0, dataclasses.replace(proto, ema=0.9))
    # Same seed, same training: only the scored weights differ (the average lags the raw weights).
    assert plain["snapshots"][0]["samples"] == averaged["snapshots"][0]["samples"]  # iteration 0: EMA == G
    assert not np.allclose(plain["samples"], averaged["samples"])


def test_ema_out_of_range_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        mc.main(["--out", str(tmp_path), "--quick", "--ema", "1.5"])
    assert "--ema must be in [0, 1), got 1.5" in capsys.readouterr().err


@pytest.mark.parametrize("variant", mc.VARIANTS)
def test_ensemble_members_train_as_they_would_alone(variant):
    """The vectorised ensemble trains each (data set, seed) exactly as a run on its own would, up to float rounding:
    no member sees another's data, gradients, minibatch statistics or Adam moments."""
    import dataclasses

    proto = dataclasses.replace(mc.Protocol(), iters=12, batch=16, eval_samples=64, snapshots=2, hidden=16,
                                mbd_group=8, unroll_steps=2)  # fmt: skip
    members = [("ring", 0), ("grid", 1), ("grid", 0)]
    together = mc.train_ensemble(variant, members, proto)
    for (data, seed), run in zip(members, together):
        alone = mc.train_run(variant, data, seed, proto)
        assert (run["data"], run["seed"], run["members"], alone["members"]) == (data, seed, 3, 1)
        np.testing.assert_allclose(run["samples"], alone["samples"], atol=2e-3)
    # the members really differ (different seeds, different data sets)
    assert not np.allclose(together[1]["samples"], together[2]["samples"], atol=1e-2)


def test_empty_ensemble_is_refused():
    with pytest.raises(ValueError, match="at least one"):
        mc.train_ensemble("gan", [], mc.Protocol())
