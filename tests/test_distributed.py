"""Training with 2 CPU processes (gloo) under torchrun: both really run, and the run finishes,
checkpoints, resumes and exports a pipeline.

`accelerate launch --cpu --num_processes 2` silently runs ONE process (REFERENCE 5.2), so the
test launches `torchrun --standalone --nproc_per_node 2 train.py` with ACCELERATE_USE_CPU=1
and checks that two processes took part.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

SMALL = [
    "data.size=200", "data.test_size=100", "text.train_steps=0",
    "train.batch_size=8", "train.group_size=2", "train.grid_captions=2", "train.grid_samples=2",
    "train.log_every=1", "train.snapshot_every=100", "train.checkpoint_every=2",
]  # fmt: skip


def torchrun(out: Path, cache: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="",
               STACKGAN_CACHE=str(cache), TQDM_DISABLE="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "train.py"), "--config", str(ROOT / "configs" / "shapes-tiny.yaml"), "--output-dir", str(out),
           *args]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, f"torchrun failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def meta(checkpoint: Path) -> dict:
    return json.loads((checkpoint / "meta.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """Both stages, 2 steps each, on 2 processes."""
    root = tmp_path_factory.mktemp("ddp")
    proc = torchrun(root / "run", root / "cache", *SMALL, "train.max_steps=2")
    return root, proc


def test_two_processes_train_and_export(ddp_run):
    root, proc = ddp_run
    run = root / "run"
    log_text = (run / "train.log").read_text(encoding="utf-8")
    assert "2 process(es)" in log_text
    assert proc.stdout.count("pipeline written to") == 2  # both ranks returned from train()
    for stage in (1, 2):
        ckpt = run / "checkpoints" / f"stage{stage}-step00000002"
        assert meta(ckpt)["num_processes"] == 2
        # Accelerate saves the RNG state of every rank.
        assert sorted(p.name for p in ckpt.glob("random_states_*.pkl")) == ["random_states_0.pkl", "random_states_1.pkl"]
    assert not list((run / "checkpoints").glob(".tmp-*"))
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [(r["stage"], r["step"]) for r in rows] == [(1, 1), (1, 2), (2, 1), (2, 2)]  # the main process logs once
    # Every rank drew the same (seeded) text encoder: one identity in the embedding cache.
    assert len(list((root / "cache" / "embeddings").iterdir())) == 1

    from stackgan.pipeline import StackGANPipeline

    pipe = StackGANPipeline.from_pretrained(run / "pipeline")
    out = pipe(["a red circle"], num_images_per_prompt=2, seed=0, output_type="pt")
    assert out.images.shape == (2, 3, 32, 32)


def test_two_processes_resume(ddp_run):
    root, _ = ddp_run
    run = root / "run"
    proc = torchrun(run, root / "cache", *SMALL, "train.max_steps=3", "--resume", "latest")
    log_text = (run / "train.log").read_text(encoding="utf-8")
    assert "resumed stage 2 at step 2" in log_text
    assert "stage 1 step 3:" not in log_text  # stage I was finished: not trained again
    last = run / "checkpoints" / "stage2-step00000003"
    assert meta(last)["step"] == 3 and meta(last)["num_processes"] == 2
    assert proc.stdout.count("pipeline written to") == 2


def test_two_processes_stop_at_the_same_step_at_the_time_limit(tmp_path):
    # A budget of 6 ms is spent at the first check (step 10): rank 0's clock ends the stage on both
    # ranks there; a rank that stopped alone would leave the other waiting in a collective.
    run = tmp_path / "run"
    proc = torchrun(run, tmp_path / "cache", *SMALL, "train.stages=[1]", "train.max_steps=40", "train.max_minutes=0.0001")
    assert "time limit of 0.0001 min reached at step 10 of 40" in (run / "train.log").read_text(encoding="utf-8")
    assert meta(run / "checkpoints" / "stage1-step00000010")["num_processes"] == 2
    assert proc.stdout.count("pipeline written to") == 2
