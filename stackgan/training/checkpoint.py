"""Checkpoints: Accelerate's save_state plus our EMA weights and meta.json, written atomically.

A checkpoint is written into `checkpoints/.tmp-<name>`, flushed to disk, then renamed to
`checkpoints/<name>`: only complete checkpoints ever carry a final name, so "latest" never
picks a half-written one. The step and stage live in meta.json, never in a file name.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import torch

log = logging.getLogger("stackgan.train")


class CheckpointError(RuntimeError):
    """No usable checkpoint, or one that does not fit this run."""


def _fsync_tree(folder: Path) -> None:
    for root, _, files in os.walk(folder):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                os.fsync(f.fileno())
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(accelerator, out: Path, stage: int, step: int, ema: torch.nn.Module, cfg, identity: dict,
                    keep: int) -> Path:
    """Save everything needed to continue: models, optimizers, RNG (Accelerate), EMA, step, config."""
    from safetensors.torch import save_file

    root = out / "checkpoints"
    name = f"stage{stage}-step{step:08d}"
    final, tmp = root / name, root / f".tmp-{name}"
    if accelerator.is_main_process:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    if accelerator.is_main_process:
        save_file({k: v.detach().cpu().contiguous() for k, v in ema.state_dict().items()}, str(tmp / "ema.safetensors"))
        meta = {"stage": stage, "step": step, "config": cfg.to_dict(), "text_encoder": identity,
                "num_processes": accelerator.num_processes}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
        _fsync_tree(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        done = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=_order)
        for old in done[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
        log.info("checkpoint %s", final)
    accelerator.wait_for_everyone()
    return final


def _order(path: Path) -> tuple[int, int]:
    try:
        meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
        return (int(meta["stage"]), int(meta["step"]))
    except (OSError, ValueError, KeyError):
        return (-1, -1)


def find_checkpoint(out: Path, resume: str) -> dict:
    """`resume` = "latest" (newest complete checkpoint of the run) or a checkpoint folder."""
    if resume == "latest":
        root = Path(out) / "checkpoints"
        found = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")] if root.exists() else []
        found = [p for p in found if _order(p) != (-1, -1)]
        if not found:
            raise CheckpointError(f"--resume latest: no complete checkpoint in {root}; start without --resume")
        path = max(found, key=_order)
    else:
        path = Path(resume)
    meta_path = path / "meta.json"
    if not meta_path.is_file():
        raise CheckpointError(f"{path} is not a checkpoint folder (no meta.json)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        int(meta["stage"]), int(meta["step"]), meta["config"]["model"]
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{meta_path} is damaged ({e!r}); pick an older checkpoint") from None
    return {"path": path, "meta": meta}


def load_checkpoint(accelerator, checkpoint: dict, ema: torch.nn.Module) -> int:
    """Restore Accelerate's state and the EMA; returns the step to continue from."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from ..pipeline import load_state_strict

    path = checkpoint["path"]
    try:
        accelerator.load_state(str(path))
        state = load_file(str(path / "ema.safetensors"))
    except (SafetensorError, OSError, RuntimeError, KeyError) as e:
        raise CheckpointError(f"checkpoint {path} cannot be loaded ({e}); it may be truncated: "
                              "resume from an older one with --resume PATH") from None
    load_state_strict(ema, state, path / "ema.safetensors")
    return int(checkpoint["meta"]["step"])
