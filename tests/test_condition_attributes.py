"""The conditioning-information diagnostic: its reader is exact on clear cases and runs on a saved pipeline."""

import json

import pytest
import torch

from benchmarks.condition_attributes import _candidate_captions, main, recoverable


def test_reader_recovers_separated_values_and_falls_to_chance_on_identical_ones():
    gen = torch.Generator().manual_seed(0)
    mu = torch.zeros(10, 4, 8)
    mu[:, :, 0] = torch.arange(4.0) * 10  # values 10 sigma apart along one dimension
    assert recoverable(mu, torch.zeros_like(mu), 1.0, 4, gen) == 1.0
    # the same mean for every value: nothing to read, the reader's pick is no better than chance
    same = torch.zeros(10, 4, 8)
    assert recoverable(same, torch.zeros_like(same), 1.0, 4, gen) == pytest.approx(0.25)
    # one sigma apart: partly recoverable, and more so with less noise
    mu1 = torch.zeros(200, 2, 1)
    mu1[:, 1, 0] = 1.0
    half = recoverable(mu1, torch.zeros_like(mu1), 1.0, 64, gen)
    assert 0.6 < half < 0.8  # Phi(0.5) = 0.69
    assert recoverable(mu1, torch.zeros_like(mu1), 0.25, 64, gen) > 0.95  # Phi(2) = 0.977


def test_candidate_captions_differ_in_the_attribute_only():
    from stackgan.data.shapes import ATTRIBUTES, SYNONYMS

    for attr in ATTRIBUTES:
        for group in _candidate_captions(attr, 20, seed=1):
            assert len(group) == len(ATTRIBUTES[attr])
            # each caption names its own value of the attribute (one of the value's synonyms or phrases)
            if attr != "position":
                for value, caption in zip(ATTRIBUTES[attr], group):
                    assert any(s in caption for s in SYNONYMS[value]), (value, caption)


def test_runs_on_a_saved_pipeline(tiny_pipeline_dir, tmp_path):
    main(["--model", str(tiny_pipeline_dir), "--contexts", "6", "--draws", "2", "--scales", "1,0.5", "--out", str(tmp_path)])
    res = json.loads((tmp_path / "condition_attributes.json").read_text(encoding="utf-8"))
    assert set(res["attributes"]) == {"shape", "colour", "size", "position", "background"}
    for r in res["attributes"].values():
        for stage in ("stage1", "stage2"):
            assert set(r[stage]) == {"1", "0.5"} and all(0 <= v <= 1 for v in r[stage].values())
    assert "| shape |" in (tmp_path / "condition_attributes.md").read_text(encoding="utf-8")


def test_bad_scales_are_refused(capsys):
    with pytest.raises(SystemExit):
        main(["--scales", "1,zero"])
    assert "--scales" in capsys.readouterr().err


def test_a_missing_model_folder_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--model", str(tmp_path / "nowhere")])
    assert "does not exist" in capsys.readouterr().err
