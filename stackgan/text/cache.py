"""Caption embeddings cached on disk, keyed by the encoder's identity and the caption text.

One safetensors file per (encoder identity, data set): the captions ride in its metadata,
the embeddings in a tensor. Missing captions are encoded and appended; writes are atomic
(temporary file + rename), and in multi-process training the main process builds the cache
first (`accelerator.main_process_first()`).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch

from .encoder import TextEncoder

log = logging.getLogger(__name__)


def cache_path(root: str | Path, encoder: TextEncoder, dataset: str) -> Path:
    ident = encoder.identity
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in dataset)[:80]
    return Path(root) / "embeddings" / f"{ident.model.replace('/', '_')}-{ident.weights_sha256[:16]}" / f"{safe}.safetensors"


def cached_embeddings(encoder: TextEncoder, captions: list[str], root: str | Path, dataset: str) -> torch.Tensor:
    """Embeddings `[len(captions), D]` of `captions`, encoding only those not cached yet."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, save_file
    from tqdm.auto import tqdm

    path = cache_path(root, encoder, dataset)
    known: dict[str, int] = {}
    table = torch.empty(0, encoder.dim)
    if path.exists():
        try:
            from safetensors import safe_open

            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
            stored = json.loads(meta.get("captions", "[]"))
            table = load_file(str(path))["embeddings"]
            if table.shape != (len(stored), encoder.dim):
                raise ValueError("shape mismatch")
            known = {c: i for i, c in enumerate(stored)}
        except (SafetensorError, ValueError, OSError, KeyError) as e:
            log.warning("rebuilding the unreadable embedding cache %s (%s)", path, e)
            known, table, stored = {}, torch.empty(0, encoder.dim), []
    else:
        stored = []
    missing = list(dict.fromkeys(c for c in captions if c not in known))
    if missing:
        new = []
        step = 1024
        for i in tqdm(range(0, len(missing), step), desc=f"embedding {len(missing)} captions", disable=len(missing) < 4096):
            new.append(encoder.encode(missing[i : i + step]))
        table = torch.cat([table, *new])
        for c in missing:
            known[c] = len(stored)
            stored.append(c)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        save_file({"embeddings": table.contiguous()}, str(tmp), metadata={"captions": json.dumps(stored)})
        os.replace(tmp, path)
    return table[torch.tensor([known[c] for c in captions], dtype=torch.long)] if captions else torch.empty(0, encoder.dim)
