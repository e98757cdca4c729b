"""A real crash: `python train.py` SIGKILLed mid-run, then `--resume latest` to the end, must
finish bitwise equal to an uninterrupted run of the same seed on the CPU; the half-written
checkpoint the kill leaves behind (`checkpoints/.tmp-*`) is never picked as latest.

Two kills:
  held      the process is killed while it holds a fully written checkpoint for step 4 under
            its hidden `.tmp-` name, just before the rename (a hook in a `sitecustomize.py`
            on PYTHONPATH delays that one `os.replace`; nothing else changes). The worst case for
            "latest": the hidden folder has a meta.json with a higher step than any complete one.
  anywhere  the process is killed as soon as the first complete checkpoint exists, wherever
            it is then (a step, a checkpoint write, the export).
All runs use one torch thread (OMP_NUM_THREADS=1): CPU kernels are deterministic for a fixed
thread count, not across thread counts.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT
from safetensors.torch import load_file

from stackgan.training.checkpoint import find_checkpoint

TINY = ROOT / "configs" / "shapes-tiny.yaml"
OVERRIDES = [
    "data.size=200", "data.test_size=100", "text.train_steps=2", "text.train_batch_size=16",
    "train.stages=[1]", "train.max_steps=6", "train.checkpoint_every=2", "train.keep_checkpoints=3",
    "train.batch_size=8", "train.group_size=2", "train.grid_captions=2", "train.grid_samples=2",
    "train.log_every=1", "train.snapshot_every=100",
]  # fmt: skip
HELD = ".tmp-stage1-step00000004"  # the checkpoint the "held" run is killed in
TIMEOUT_S = 120

# Delays one rename (checkpoints/.tmp-NAME -> checkpoints/NAME) so the test can kill the
# process while a complete-looking checkpoint still has its hidden name.
SITECUSTOMIZE = '''
import os, time
_hold = os.environ.get("STACKGAN_TEST_HOLD_RENAME")
if _hold:
    _replace = os.replace
    def _held_replace(src, dst, *a, **k):
        if os.path.basename(os.fspath(src)) == _hold:
            open(os.path.join(src, "HELD"), "w").close()   # tells the test: kill me now
            time.sleep(600)
        return _replace(src, dst, *a, **k)
    os.replace = _held_replace
'''


def train_cmd(out: Path, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "train.py"), "--config", str(TINY), "--output-dir", str(out), *extra, *OVERRIDES]


def run_env(hook_dir: Path | None = None, hold: str | None = None) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("STACKGAN_TEST_HOLD_RENAME", None)
    if hook_dir is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(hook_dir), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        env["STACKGAN_TEST_HOLD_RENAME"] = hold or ""
    return env


def start(out: Path, env: dict[str, str], *extra: str, log_name: str = "stderr.txt") -> subprocess.Popen:
    out.parent.mkdir(parents=True, exist_ok=True)
    err = open(out.parent / f"{out.name}-{log_name}", "w", encoding="utf-8")  # noqa: SIM115 (closed with the process)
    proc = subprocess.Popen(train_cmd(out, *extra), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)
    proc.stderr_file = err  # type: ignore[attr-defined]
    return proc


def finish(proc: subprocess.Popen, out: Path, log_name: str = "stderr.txt") -> str:
    try:
        rc = proc.wait(timeout=TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr_file.close()  # type: ignore[attr-defined]
    text = (out.parent / f"{out.name}-{log_name}").read_text(encoding="utf-8", errors="replace")
    assert rc == 0, f"train.py exited with {rc}:\n{text[-3000:]}"
    return text


def complete_checkpoints(out: Path) -> list[Path]:
    root = out / "checkpoints"
    if not root.is_dir():
        return []
    return [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / "meta.json").is_file()]


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(((x.double() - b[k].double()).abs().max().item() if x.numel() else 0.0) for k, x in a.items())


def assert_bitwise(a_path: Path, b_path: Path) -> None:
    a, b = load_file(str(a_path)), load_file(str(b_path))
    assert a.keys() == b.keys(), a_path
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, (f"{b_path} differs from the uninterrupted run in {len(differ)} tensors, e.g. {differ[:3]}; "
                        f"max |diff| {max_abs_diff(a, b):.3g}")


def kill_when(proc: subprocess.Popen, ready) -> bool:
    """SIGKILL `proc` once `ready()` holds; False while it does not yet (fails if the run ended first)."""
    if not ready():
        if proc.poll() is not None:
            pytest.fail(f"train.py ended (rc {proc.returncode}) before it could be killed")
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stderr_file.close()  # type: ignore[attr-defined]
    return True


def state_after_kill(run: Path, rc: int) -> dict:
    latest = find_checkpoint(run, "latest")
    hidden = {p.name: json.loads((p / "meta.json").read_text())["step"] if (p / "meta.json").is_file() else None
              for p in (run / "checkpoints").iterdir() if p.name.startswith(".")}
    return {"rc": rc, "latest": latest["path"].name, "latest_step": latest["meta"]["step"], "hidden": hidden,
            "complete": sorted(p.name for p in complete_checkpoints(run)), "exported": (run / "pipeline").exists()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Phase 1, side by side: the uninterrupted reference run and the two runs to kill.
    Phase 2, side by side: both killed runs resumed with --resume latest."""
    root = tmp_path_factory.mktemp("kill")
    hook = root / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE, encoding="utf-8")
    t0 = time.monotonic()
    ref = start(root / "ref", run_env())
    victims = {"held": start(root / "held", run_env(hook, HELD)), "anywhere": start(root / "anywhere", run_env())}
    ready = {"held": (root / "held" / "checkpoints" / HELD / "HELD").exists,
             "anywhere": lambda: bool(complete_checkpoints(root / "anywhere"))}
    pending, deadline, after_kill = set(victims), time.monotonic() + TIMEOUT_S, {}
    try:
        while pending:
            for name in sorted(pending):
                if kill_when(victims[name], ready[name]):
                    pending.discard(name)
                    after_kill[name] = state_after_kill(root / name, victims[name].returncode)
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting to kill {sorted(pending)}")
            time.sleep(0.005)
        finish(ref, root / "ref")
    finally:
        for proc in [ref, *victims.values()]:
            if proc.poll() is None:
                proc.kill()
    t1 = time.monotonic()
    env = dict(run_env(), ACCELERATE_LOG_LEVEL="INFO")  # the CLI keeps the root logger at WARNING
    resumed = {name: start(root / name, env, "--resume", "latest", log_name="resume.txt") for name in victims}
    logs = {name: finish(proc, root / name, "resume.txt") for name, proc in resumed.items()}
    return {"root": root, "after_kill": after_kill, "resume_log": logs,
            "seconds": {"phase1": t1 - t0, "phase2": time.monotonic() - t1}}


def compare_with_reference(root: Path, run: Path, err: str) -> None:
    ref = root / "ref"
    # The exported weights, the stage output and the last checkpoint (G, D, EMA, optimizers).
    assert_bitwise(ref / "stages" / "stage1" / "model.safetensors", run / "stages" / "stage1" / "model.safetensors")
    assert_bitwise(ref / "pipeline" / "stage1" / "model.safetensors", run / "pipeline" / "stage1" / "model.safetensors")
    assert_bitwise(ref / "pipeline" / "text_encoder" / "open_clip_model.safetensors",
                   run / "pipeline" / "text_encoder" / "open_clip_model.safetensors")
    last = "stage1-step00000006"
    for name in ("model.safetensors", "model_1.safetensors", "ema.safetensors"):
        assert_bitwise(ref / "checkpoints" / last / name, run / "checkpoints" / last / name)
    for name in ("optimizer.bin", "optimizer_1.bin"):
        sa = torch.load(ref / "checkpoints" / last / name, weights_only=True)
        sb = torch.load(run / "checkpoints" / last / name, weights_only=True)
        assert sa["state"].keys() == sb["state"].keys()
        for k in sa["state"]:
            assert all(torch.equal(sa["state"][k][f], sb["state"][k][f]) for f in sa["state"][k]), (name, k)
    # Nothing hidden is left over once the resumed run has rewritten the checkpoint it lost.
    assert not [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]
    # Accelerate read our random_states_0.pkl (with weights_only=True, its default) without falling back.
    assert "All random states loaded successfully" in err and "Could not load random states" not in err


def test_kill_during_checkpoint_rename_then_resume_is_bitwise_equal(runs):
    state = runs["after_kill"]["held"]
    assert state["rc"] == -signal.SIGKILL and not state["exported"]
    assert state["hidden"] == {HELD: 4}  # complete-looking, meta.json included, under its hidden name
    assert state["complete"] == ["stage1-step00000002"]
    assert state["latest"] == "stage1-step00000002"  # never the hidden step-4 folder
    err = runs["resume_log"]["held"]
    assert "resumed stage 1 at step 2" in err
    compare_with_reference(runs["root"], runs["root"] / "held", err)


def test_kill_anywhere_after_the_first_checkpoint_then_resume_is_bitwise_equal(runs):
    state = runs["after_kill"]["anywhere"]
    assert state["rc"] == -signal.SIGKILL and not state["exported"]
    assert state["latest"] == f"stage1-step{state['latest_step']:08d}" and state["latest_step"] in (2, 4, 6)
    assert all(step is None or step > state["latest_step"] for step in state["hidden"].values())
    err = runs["resume_log"]["anywhere"]
    assert f"resumed stage 1 at step {state['latest_step']}" in err
    compare_with_reference(runs["root"], runs["root"] / "anywhere", err)
