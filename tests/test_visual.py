"""The training plot reads a resumed run's log as the run that made the weights."""
import json

from PIL import Image

from stackgan.visual import latest_records, plot_metrics


def test_a_resumed_run_plots_its_later_records_of_a_step(tmp_path):
    first = [{"stage": 1, "step": s, "loss_d": 1.0} for s in (100, 200, 300)]
    # killed after step 300, resumed from the checkpoint at 200: step 300 is trained and logged again;
    # then stage II runs, is thrown away and trained again
    again = [{"stage": 1, "step": 300, "loss_d": 5.0}, {"stage": 2, "step": 100, "loss_d": 7.0},
             {"stage": 1, "step": 400, "loss_d": 6.0}, {"stage": 2, "step": 100, "loss_d": 8.0}]
    rows = latest_records(first + again)
    assert [(r["stage"], r["step"], r["loss_d"]) for r in rows] == [
        (1, 100, 1.0), (1, 200, 1.0), (1, 300, 5.0), (1, 400, 6.0), (2, 100, 8.0)]

    log = tmp_path / "metrics.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in first + again), encoding="utf-8")
    png = plot_metrics(log, tmp_path / "losses.png")
    assert Image.open(png).size[0] > Image.open(png).size[1]  # one panel per stage, side by side


def test_an_empty_log_plots_nothing(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_text("\n", encoding="utf-8")
    assert plot_metrics(log, tmp_path / "losses.png") is None
    assert not (tmp_path / "losses.png").exists()
