"""Shared fixtures: tiny models and pipelines built on the spot (nothing downloaded)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Caches (rendered shapes, caption embeddings) go to a per-session temporary folder."""
    monkeypatch.setenv("STACKGAN_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def make_tiny_pipeline(seed: int = 0, stage2: bool = True):
    """A random-weight pipeline: shapes-clip-tiny encoder, 16 px stage I, 32 px stage II."""
    from stackgan.models.stage1 import Stage1Generator
    from stackgan.models.stage2 import Stage2Generator
    from stackgan.pipeline import StackGANPipeline
    from stackgan.text.encoder import load_text_encoder

    torch.manual_seed(seed)
    enc = load_text_encoder("shapes-clip-tiny")
    g1 = Stage1Generator(enc.dim, z_dim=8, cond_dim=8, gf=4, resolution=16)
    g2 = Stage2Generator(enc.dim, cond_dim=8, gf=4, res_blocks=1, res_in=16, resolution=32) if stage2 else None
    return StackGANPipeline(enc, g1, g2, {"model_id": f"tiny-{seed}", "example_prompts": ["a red circle", "a blue star"]})


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory) -> Path:
    """A saved tiny pipeline folder (random weights), shared by the session's tests."""
    folder = tmp_path_factory.mktemp("pipe") / "tiny"
    make_tiny_pipeline().save_pretrained(folder)
    return folder
