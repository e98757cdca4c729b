"""One training loop for both stages: text encoder (optional) -> stage I -> stage II -> export.

    python train.py --config configs/shapes-tiny.yaml --output-dir runs/tiny
    accelerate launch train.py --config configs/shapes.yaml --output-dir runs/shapes

A run folder holds config.yaml (resolved), train.log, metrics.jsonl, losses.png, logs/
(TensorBoard), samples/ (fixed caption x noise grids), checkpoints/ and, at the end,
pipeline/ (loads with `StackGANPipeline.from_pretrained`).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import env  # noqa: F401
from ..config import Config, ConfigError, ModelConfig, dump_config
from ..data import build_dataset
from ..data.base import to_float, to_uint8
from ..data.shapes import ATTRIBUTES
from ..models.stage1 import Stage1Discriminator, Stage1Generator
from ..models.stage2 import Stage2Discriminator, Stage2Generator
from ..pipeline import StackGANPipeline, load_component, load_state_strict, save_component
from ..text.cache import cached_embeddings
from ..text.encoder import TextEncoder, load_text_encoder
from ..visual import plot_metrics, sample_sheet
from .checkpoint import CheckpointError, find_checkpoint, save_checkpoint
from .data import CaptionTable, GroupSampler, PairDataset, StepBatches, collate
from .losses import (
    aux_loss,
    aux_spread_loss,
    clip_match_loss,
    d_loss,
    g_loss,
    gaussian_blur,
    jitter,
    kl_loss,
    mode_seeking_loss,
    r1_penalty,
)

log = logging.getLogger("stackgan.train")


class TrainingDiverged(RuntimeError):
    """A loss or a gradient became NaN/Inf; the last good checkpoint is left untouched."""


@dataclass
class RunContext:
    cfg: Config
    out: Path
    accelerator: object
    encoder: TextEncoder
    embeddings: torch.Tensor  # [n_captions, D] on the device
    table: CaptionTable
    dataset: object
    grid_text: torch.Tensor  # [grid_captions, D]
    grid_captions: list[str]
    init: StackGANPipeline | None
    freeze_stage1: bool


# ------------------------------------------------------------------ building blocks
def build_models(cfg: Config, stage: int, text_dim: int, tower_channels: int = 0) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The stage's generator and discriminator; `tower_channels` (see `d_tower_channels`) when
    `model.d_tower` is on."""
    m = cfg.model
    if m.d_tower and tower_channels < 1:
        raise ValueError("model.d_tower needs tower_channels, the channels of the image tower's feature map "
                         "(stackgan.training.loop.d_tower_channels(cfg, encoder))")
    tower_channels = tower_channels if m.d_tower else 0
    aux = aux_classes(cfg)
    if stage == 1:
        g = Stage1Generator(text_dim, m.z_dim, m.cond_dim, m.gf, m.res1, m.g1_film)
        d = Stage1Discriminator(text_dim, m.cond_dim, m.df, m.res1, m.d1_minibatch, m.mbd_kernels, m.mbd_dims,
                                m.d_norm, m.d_cond, tower_channels, m.d_depth, aux, m.d1_upsample, m.d_aux_twin)
    else:
        g = Stage2Generator(text_dim, m.cond_dim, m.gf, m.res_blocks, m.res1, m.res2, m.g2_film, m.g2_skip)
        d = Stage2Discriminator(text_dim, m.cond_dim, m.df, m.res2, m.d2_minibatch, m.mbd_kernels, m.mbd_dims,
                                m.d_norm, m.d_cond, tower_channels, m.d_depth, aux, m.d_aux_twin)
    return g, d


def aux_classes(cfg: Config) -> int:
    """Classes of the discriminators' auxiliary classifier: those of every `model.d_aux` attribute."""
    return sum(aux_sizes(cfg))


def aux_targets(cfg: Config, dataset, table: CaptionTable) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels of the auxiliary classifier (`model.d_aux`), one column per attribute: the true value
    index of every image `[images, A]`, and the value each caption names `[captions, A]` (-1 where
    it leaves the attribute out)."""
    names = cfg.model.d_aux
    images = torch.stack([torch.as_tensor(dataset.labels[a]) for a in names], dim=1)
    captions = torch.full((len(table.texts), len(names)), -1, dtype=torch.long)
    for c, named in enumerate(table.named_attributes(dataset)):
        for j, a in enumerate(names):
            if named and a in named:
                captions[c, j] = ATTRIBUTES[a].index(named[a])
    return images, captions


def aux_sizes(cfg: Config) -> list[int]:
    """Classes of each `model.d_aux` attribute, in order: the blocks of the auxiliary logits."""
    return [len(ATTRIBUTES[a]) for a in cfg.model.d_aux]


def aux_accuracy(logits: torch.Tensor, targets: torch.Tensor, sizes: list[int]) -> float:
    """Share of the (sample, attribute) targets the auxiliary classifier reads right (see `aux_loss`)."""
    right, total, start = 0, 0, 0
    for j, n in enumerate(sizes):
        t = targets[:, j]
        keep = t >= 0
        right += int((logits[keep, start:start + n].argmax(1) == t[keep]).sum())
        total += int(keep.sum())
        start += n
    return right / max(total, 1)


def d_tower_channels(cfg: Config, encoder: TextEncoder) -> int:
    """Channels of the image-tower feature map the discriminators read (`model.d_tower`), else 0."""
    if not cfg.model.d_tower:
        return 0
    if not encoder.has_image_tower:
        raise ConfigError(f"model.d_tower needs a text encoder with an image tower (a full CLIP model); "
                          f"{encoder.identity.short()} has none: set model.d_tower=false")
    try:
        with torch.no_grad():
            probe = torch.zeros(2, 3, cfg.model.res1, cfg.model.res1, device=encoder.device)
            return int(encoder.image_map(probe, cfg.model.d_tower_block).shape[1])
    except (AssertionError, IndexError, ValueError) as e:  # open_clip asserts on an index out of range
        raise ConfigError(f"model.d_tower_block={cfg.model.d_tower_block} does not name a block of the image tower "
                          f"of {encoder.identity.short()}: {e}") from e


def step_generator(seed: int, stage: int, step: int, rank: int) -> torch.Generator:
    g = torch.Generator("cpu")
    g.manual_seed((seed * 1_000_003 + stage * 7_919 + rank) * 10_000_019 + step)
    return g


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    # One fused call per tensor list instead of one small kernel per parameter.
    params, buffers = list(ema.parameters()), list(ema.buffers())
    if params:
        torch._foreach_lerp_(params, [p.detach() for p in model.parameters()], 1.0 - decay)
    if buffers:
        torch._foreach_copy_(buffers, list(model.buffers()))


def _grad_norm(module: torch.nn.Module) -> torch.Tensor:
    """The global L2 norm of `module`'s gradients as a 0-dim float32 tensor on their device (not a
    Python float: reading it would wait for the GPU; `_finite_or_handle` reads it with the loss in
    one transfer)."""
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)).float())


# ------------------------------------------------------------------ the run
def train(cfg: Config, output_dir: str | Path, resume: str | None = None, init_from: str | None = None,
          freeze_stage1: bool = False, reinit_text_projection: bool = False) -> Path:
    """Train the stages in `cfg.train.stages` into `output_dir`; returns the exported pipeline folder.

    Args:
        resume:        "latest" or a checkpoint folder: continue from there (same config required).
        init_from:     a pipeline folder to fine-tune (its text encoder and generators are the start).
        freeze_stage1: with init_from, keep its stage I as it is and train stage II only.
        reinit_text_projection: with init_from and a text encoder whose embedding size differs
                       from the init pipeline's, start the generators' text projections (the
                       conditioning-augmentation layers) from fresh weights and keep the rest.
    """
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    out = Path(output_dir)
    t = cfg.train
    precision = t.mixed_precision
    if precision == "auto":
        from ..optimize import bf16_available

        precision = "bf16" if bf16_available(torch.device("cuda" if torch.cuda.is_available() else "cpu")) else "no"
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),
        mixed_precision=precision,
        log_with="tensorboard",
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")),
    )
    init = StackGANPipeline.from_pretrained(init_from) if init_from else None
    adopted = _adopt_init_architecture(cfg, init) if init is not None else ""
    # A resume that does not fit fails before the run folder (its config.yaml) is touched.
    checkpoint = find_checkpoint(out, resume) if resume else None
    if checkpoint is not None:
        _check_resumable(checkpoint, cfg)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(dump_config(cfg), encoding="utf-8")
        _attach_run_log(out / "train.log")
    accelerator.wait_for_everyone()
    log.info("run %s: %d process(es) on %s, mixed precision %s", out, accelerator.num_processes,
             accelerator.device, precision)
    if adopted:
        log.info("model settings taken from %s: %s", init.source, adopted)
    stages = list(t.stages)
    if freeze_stage1:
        if init is None:
            raise ConfigError("--freeze-stage1 needs --init-from a pipeline folder whose stage I is kept")
        stages = [2]
    if stages == [2] and init is None and not (out / "stages" / "stage1" / "model.safetensors").exists():
        raise ConfigError("train.stages=[2] needs a trained stage I: pass --init-from PIPELINE_DIR")

    ctx = _prepare_context(cfg, out, accelerator, init, freeze_stage1, reinit_text_projection)
    if checkpoint is not None:
        _check_same_encoder(checkpoint, ctx.encoder)
    start_stage = checkpoint["meta"]["stage"] if checkpoint else stages[0]
    for stage in stages:
        if stage < start_stage:
            continue
        done = out / "stages" / f"stage{stage}" / "model.safetensors"
        if checkpoint is None and resume and done.exists():
            continue
        run_stage(ctx, stage, checkpoint if checkpoint and checkpoint["meta"]["stage"] == stage else None)
        checkpoint = None

    pipeline_dir = out / "pipeline"
    if accelerator.is_main_process:
        export_pipeline(ctx, pipeline_dir)
        if (out / "metrics.jsonl").exists():
            plot_metrics(out / "metrics.jsonl", out / "losses.png")
        log.info("exported %s", pipeline_dir)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    _attach_run_log(None)
    return pipeline_dir


def _adopt_init_architecture(cfg: Config, init: StackGANPipeline) -> str:
    """Fine-tuning builds the generators the init pipeline has, whatever the preset says."""
    g1, g2 = init.stage1, init.stage2
    arch = {"z_dim": g1.z_dim, "cond_dim": g1.cond_dim, "gf": g1.ch0 // 8, "res1": g1.resolution}
    if g1.film is not None:  # without it, model.g1_film=true adds the modulation, zero-initialised (run_stage)
        arch["g1_film"] = True
    if g2 is not None:
        arch.update(res_blocks=len(g2.res), res2=g2.resolution)
        if g2.film is not None:
            arch["g2_film"] = True
        arch["g2_skip"] = g2.skip  # a skip changes what the weights compute: always the init's
    changed = {k: (getattr(cfg.model, k), v) for k, v in arch.items() if getattr(cfg.model, k) != v}
    for k, (_, v) in changed.items():
        setattr(cfg.model, k, v)
    return ", ".join(f"{k}={v}" for k, (_, v) in changed.items())


def _attach_run_log(path: Path | None) -> None:
    """Send the "stackgan" logs to `path` (None: to no run file). Handlers of an earlier train()
    in this process are removed first, so one run's messages never land in another's train.log."""
    root = logging.getLogger("stackgan")
    for old in [h for h in root.handlers if getattr(h, "stackgan_run_log", False)]:
        root.removeHandler(old)
        old.close()
    if path is not None:
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        handler.stackgan_run_log = True
        root.addHandler(handler)
        root.setLevel(logging.INFO)


def _check_resumable(checkpoint: dict, cfg: Config) -> None:
    # A setting added after the checkpoint was written takes its default (the behaviour it had then).
    saved_model = {**dataclasses.asdict(ModelConfig()), **checkpoint["meta"]["config"]["model"]}
    now = cfg.to_dict()["model"]
    if saved_model != now:
        diff = {k: (saved_model.get(k), v) for k, v in now.items() if saved_model.get(k) != v}
        unknown = {k: v for k, v in saved_model.items() if k not in now}
        what = f"model settings saved vs now: {diff}" if diff else ""
        if unknown:  # written by a version of stackgan with settings this one lacks
            what += ("; " if what else "") + (f"settings this version of stackgan does not have: {unknown}; "
                                              "resume with the version that wrote the checkpoint")
        raise CheckpointError(f"checkpoint {checkpoint['path']} was made with a different architecture "
                              f"({what}); resume with the original config or start a new run")


def _check_same_encoder(checkpoint: dict, encoder: TextEncoder) -> None:
    saved = checkpoint["meta"].get("text_encoder") or {}
    if saved and saved.get("weights_sha256") != encoder.identity.weights_sha256:
        raise CheckpointError(f"checkpoint {checkpoint['path']} was trained with the text encoder "
                              f"{saved.get('model')}@{str(saved.get('weights_sha256'))[:12]} but this run's is "
                              f"{encoder.identity.short()}; resume with the original text.* settings")


def _prepare_context(cfg: Config, out: Path, accelerator, init: StackGANPipeline | None, freeze_stage1: bool,
                     reinit_text_projection: bool = False) -> RunContext:
    device = accelerator.device
    with accelerator.main_process_first():
        dataset = build_dataset(cfg.data, "train")
    encoder = _text_encoder(cfg, out, accelerator, dataset, init)
    table = CaptionTable.build(dataset)
    with accelerator.main_process_first():
        emb = caption_embeddings(cfg, encoder, dataset, table)
    if init is not None and init.stage1.text_dim != encoder.dim:
        what = (f"the init pipeline {init.source} was trained on {init.stage1.text_dim}-d text embeddings but the "
                f"text encoder {encoder.identity.short()} gives {encoder.dim}-d")
        if not reinit_text_projection:
            raise ConfigError(f"{what}. Pass --reinit-text-projection to start the generators' text projections "
                              "from fresh weights (everything else is kept), or keep the init pipeline's encoder "
                              "with text.model=init")
        if freeze_stage1 or 1 not in cfg.train.stages:
            raise ConfigError(f"{what}, so its stage I cannot be kept as it is: its text projection must be trained "
                              "again. Drop --freeze-stage1 and train both stages (train.stages=[1,2])")
        log.info("%s: the generators' text projections start from fresh weights", what)
    for stage, name, on, start in ((1, "I", cfg.model.g1_film, init and init.stage1),
                                   (2, "II", cfg.model.g2_film, init and init.stage2)):
        if not on or start is None or start.film is not None:
            continue
        frozen = stage == 1 and freeze_stage1
        if frozen or stage not in cfg.train.stages:
            fix = "drop --freeze-stage1" if frozen else f"put {stage} in train.stages"
            raise ConfigError(f"model.g{stage}_film=true adds FiLM layers to the stage {name} generator of {init.source}, "
                              f"which has none, so its stage {name} must be trained: {fix}, or set model.g{stage}_film=false")
        log.info("adding FiLM layers to the stage %s generator of %s (zero-initialised: training starts from its "
                 "images exactly)", name, init.source)
    if cfg.train.clip_weight > 0:
        if not encoder.has_image_tower:
            raise ConfigError(f"train.clip_weight needs a text encoder with an image tower (a full CLIP model); "
                              f"{encoder.identity.short()} has none: set train.clip_weight=0")
    if cfg.train.clip_weight > 0 or cfg.model.d_tower:
        d_tower_channels(cfg, encoder)  # a bad model.d_tower_block fails here, before any training
        encoder.to(device)  # the matching loss and the discriminators run images through its (frozen) image tower
    # Fixed captions for the sample grid: held-out captions when the data set has a test split.
    try:
        grid_source = build_dataset(cfg.data, "test") if cfg.data.name == "shapes" else dataset
    except Exception:  # a user folder without a test split
        grid_source = dataset
    grid_captions = [grid_source.captions(i % len(grid_source))[0] for i in range(cfg.train.grid_captions)]
    grid_text = encoder.encode(grid_captions).to(device)
    return RunContext(cfg, out, accelerator, encoder, emb.to(device), table, dataset, grid_text, grid_captions, init,
                      freeze_stage1)


def caption_embeddings(cfg: Config, encoder: TextEncoder, dataset, table: CaptionTable | None = None) -> torch.Tensor:
    """Embeddings `[n_captions, D]` of the data set's unique captions, from the on-disk cache."""
    from ..data.shapes import default_cache_dir

    table = table or CaptionTable.build(dataset)
    return cached_embeddings(encoder, table.texts, default_cache_dir(), _dataset_key(cfg, dataset))


def _dataset_key(cfg: Config, dataset) -> str:
    if cfg.data.name == "shapes":
        return f"shapes-s{cfg.data.seed}-n{cfg.data.size}"
    # hashlib, not hash(): str hashes change between processes, and the cache must outlive the run.
    folder = str(Path(cfg.data.path).resolve())
    return f"{Path(folder).name}-{hashlib.sha256(folder.encode('utf-8', 'surrogatepass')).hexdigest()[:10]}-n{len(dataset)}"


def _text_encoder(cfg: Config, out: Path, accelerator, dataset, init: StackGANPipeline | None) -> TextEncoder:
    if init is not None and not cfg.text.pretrained and cfg.text.model in ("", "init", init.text_encoder.name):
        if cfg.text.train_steps:
            log.info("keeping the text encoder of %s (text.train_steps ignored)", init.source)
        return init.text_encoder  # fine-tuning keeps the init pipeline's encoder unless another is named
    if cfg.text.model == "init":
        raise ConfigError("text.model=init keeps the text encoder of --init-from PIPELINE_DIR; pass --init-from "
                          "or name an open_clip model")
    if cfg.text.train_steps > 0:
        folder = out / "text_encoder"
        if accelerator.is_main_process and not (folder / "open_clip_model.safetensors").exists():
            from ..text.train import attribute_readout, caption_retrieval, train_text_encoder

            log.info("training text encoder %s for %d steps", cfg.text.model, cfg.text.train_steps)
            enc = train_text_encoder(dataset, cfg.text.model, cfg.text.train_steps, cfg.text.train_batch_size,
                                     cfg.text.train_lr, cfg.train.seed, folder, device=accelerator.device,
                                     progress=accelerator.is_local_main_process, group_by=cfg.text.train_group_by)
            if cfg.data.name == "shapes":
                test = build_dataset(cfg.data, "test")
                res = {**caption_retrieval(enc, test, trials=200), "attributes": attribute_readout(enc, test, images=200)}
                log.info("text encoder caption retrieval R@1 %.3f (chance %.3f); zero-shot per attribute: %s",
                         res["r_at_1"], res["chance"],
                         ", ".join(f"{k} {v['zero_shot']:.2f}" for k, v in res["attributes"].items()))
                (folder / "retrieval.json").write_text(json.dumps(res, indent=2), encoding="utf-8")
        accelerator.wait_for_everyone()
        return load_text_encoder("local-dir:" + str(folder), device="cpu")
    torch.manual_seed(cfg.train.seed)  # without weights the encoder is random: the same on every rank and on resume
    return load_text_encoder(cfg.text.model, cfg.text.pretrained, device="cpu")


def _render_grid(ctx: RunContext, stage: int, g_ema: torch.nn.Module, g1: torch.nn.Module | None, label: str) -> None:
    """The fixed (caption, noise) grid from the EMA generator; stage I and II side by side."""
    cfg = ctx.cfg
    k = cfg.train.grid_samples
    gen = torch.Generator("cpu").manual_seed(cfg.train.seed + 12345)
    text = ctx.grid_text.repeat_interleave(k, dim=0)
    z = torch.randn(text.shape[0], cfg.model.z_dim, generator=gen).to(text.device)
    eps1 = torch.randn(text.shape[0], cfg.model.cond_dim, generator=gen).to(text.device)
    eps2 = torch.randn(text.shape[0], cfg.model.cond_dim, generator=gen).to(text.device)
    with torch.no_grad():
        if stage == 1:
            low = g_ema.eval()(text, z, eps1)[0]
            panels = [to_uint8(low.cpu())]
        else:
            low = g1(text, z, eps1)[0]
            high = g_ema.eval()(low, text, eps2)[0]
            panels = [to_uint8(low.cpu()), to_uint8(high.cpu())]
    rows = [[p[i * k : (i + 1) * k] for p in panels] for i in range(len(ctx.grid_captions))]
    labels = ["stage I"] if stage == 1 else ["stage I", "stage II"]
    cell = max(64, (cfg.model.res2 if stage == 2 else cfg.model.res1))
    sheet = sample_sheet(ctx.grid_captions, rows, labels, cell=min(cell, 128))
    (ctx.out / "samples").mkdir(exist_ok=True)
    sheet.save(ctx.out / "samples" / f"stage{stage}-{label}.png")


def run_stage(ctx: RunContext, stage: int, checkpoint: dict | None) -> None:
    cfg, acc, t = ctx.cfg, ctx.accelerator, ctx.cfg.train
    device = acc.device
    max_steps = t.stage2_steps if (stage == 2 and t.stage2_steps) else t.max_steps
    minutes = t.stage2_minutes if (stage == 2 and t.stage2_minutes) else t.max_minutes
    torch.manual_seed(t.seed + stage)  # initial weights are a function of the seed (same on every rank)
    G, D = build_models(cfg, stage, ctx.encoder.dim, d_tower_channels(cfg, ctx.encoder))
    g1 = None
    if stage == 2:
        g1 = _frozen_stage1(ctx).to(device)
    layout = torch.channels_last if t.channels_last else torch.contiguous_format
    G, D = G.to(memory_format=layout), D.to(memory_format=layout)
    if g1 is not None:
        g1 = g1.to(memory_format=layout)
    if ctx.init is not None and checkpoint is None:
        start = ctx.init.stage1 if stage == 1 else ctx.init.stage2
        if start is not None:
            state = start.state_dict()
            if start.text_dim != ctx.encoder.dim:  # allowed only with reinit_text_projection (checked above)
                state = {**state, **{k: v for k, v in G.state_dict().items() if k.startswith("ca.")}}
            if G.film is not None and start.film is None:  # model.g1_film / g2_film added to the init
                state = {**state, **{k: v for k, v in G.state_dict().items() if k.startswith("film.")}}
            load_state_strict(G, state, f"stage {stage} of {ctx.init.source}")
    ema = copy.deepcopy(G).eval().requires_grad_(False).to(device)
    opt_g = torch.optim.Adam(G.parameters(), lr=t.lr_g, betas=(t.beta1, t.beta2))
    opt_d = torch.optim.Adam(D.parameters(), lr=t.lr_d, betas=(t.beta1, t.beta2))
    G, D, opt_g, opt_d = acc.prepare(G, D, opt_g, opt_d)
    step = 0
    if checkpoint is not None:
        from .checkpoint import load_checkpoint

        step = load_checkpoint(acc, checkpoint, ema)
        log.info("resumed stage %d at step %d from %s", stage, step, checkpoint["path"])
    res = cfg.model.res1 if stage == 1 else cfg.model.res2
    sampler = GroupSampler(ctx.dataset, ctx.table, ctx.embeddings.cpu(), t.batch_size, t.group_size, t.seed)
    loader = torch.utils.data.DataLoader(
        PairDataset(ctx.dataset, res), batch_sampler=StepBatches(sampler, stage, step, max_steps, acc.process_index),
        collate_fn=collate, num_workers=cfg.data.num_workers,
    )
    group = t.group_size if cfg.model.mbd_scope == "group" else None
    if group is None and (cfg.model.d1_minibatch if stage == 1 else cfg.model.d2_minibatch) == "mbstd":
        group = min(cfg.model.mbstd_group, t.batch_size)
    toggle_d = acc.num_processes == 1  # DDP needs every D parameter to receive a gradient each backward
    if acc.is_main_process:
        acc.init_trackers(f"stage{stage}")
        if step == 0:
            # From the EMA copy (equal to G at step 0): rendering calls .eval(), which on G itself
            # would leave stage I training with batch norm frozen in eval mode.
            _render_grid(ctx, stage, ema, g1, "start")
    from tqdm.auto import tqdm

    bar = tqdm(total=max_steps, initial=step, desc=f"stage {stage}", disable=not acc.is_local_main_process)
    t0, seen = time.time(), 0
    deadline = _clock() + 60 * minutes if minutes else None
    G.train()
    D.train()
    if cfg.model.d_aux:
        aux_images, aux_captions = (x.to(device) for x in aux_targets(cfg, ctx.dataset, ctx.table))
        sizes = aux_sizes(cfg)
    for images, caps, index in loader:
        # Batch
        real = to_float(images).to(device).contiguous(memory_format=layout)
        text = ctx.embeddings[caps.to(device)]
        wrong = text.roll(t.group_size, dims=0)  # the next group's caption
        hard = None
        if t.hard_negatives > 0:
            ids = sampler.mismatched(caps[::t.group_size].tolist(), stage, step, acc.process_index, t.hard_negatives)
            ids = torch.tensor(ids, device=device)
            hard = ctx.embeddings[ids[ids >= 0]]
            per_image = ids.repeat_interleave(t.group_size)
            wrong = torch.where((per_image >= 0)[:, None], ctx.embeddings[per_image.clamp(min=0)], wrong)
        gen = step_generator(t.seed, stage, step, acc.process_index)
        z = torch.randn(real.shape[0], cfg.model.z_dim, generator=gen).to(device)
        eps = torch.randn(real.shape[0], cfg.model.cond_dim, generator=gen).to(device)
        for group_ in opt_g.param_groups:
            group_["lr"] = t.lr_g * 0.5 ** (step // t.lr_decay_every) if t.lr_decay_every else t.lr_g
        for group_ in opt_d.param_groups:
            group_["lr"] = t.lr_d * 0.5 ** (step // t.lr_decay_every) if t.lr_decay_every else t.lr_d

        # Generate
        if stage == 1:
            fake, mu, logvar = G(text, z, eps)
        else:
            with torch.no_grad():
                low = g1(text, z, torch.randn(real.shape[0], cfg.model.cond_dim, generator=gen).to(device))[0]
            fake, mu, logvar = G(low, text, eps)

        # D step
        tower = {}
        if cfg.model.d_tower:
            with torch.no_grad():
                tower = {"real_tower": ctx.encoder.image_map(real, cfg.model.d_tower_block),
                         "fake_tower": ctx.encoder.image_map(fake.detach(), cfg.model.d_tower_block)}
        if toggle_d:
            D.requires_grad_(True)
        r1 = t.r1_gamma > 0 and step % t.r1_every == 0
        if r1:
            real = real.detach().requires_grad_(True)
        contrast = {}
        if t.contrastive > 0:
            # The batch's captions, one per group (image n's own caption is column n // group_size),
            # then the hard negatives when there are any.
            columns = text[:: t.group_size] if hard is None else torch.cat([text[:: t.group_size], hard])
            contrast = {"contrast_text": columns}
            own = torch.arange(real.shape[0], device=device) // t.group_size
        out_d = D(text, real=real, fake=fake.detach(), wrong_text=wrong, group=group, **tower, **contrast)
        loss_d = d_loss(out_d, t.loss)
        if cfg.model.d_aux:  # the real images' true attributes; what the captions of the fakes name
            real_labels = aux_images[index.to(device)]
            fake_labels = aux_captions[caps.to(device)]
            loss_d = loss_d + t.aux_weight * aux_loss(out_d["real_aux"], real_labels, sizes)
            if cfg.model.d_aux_twin:  # the twin learns what the generator was asked for
                loss_d = loss_d + t.aux_weight * aux_loss(out_d["fake_aux_twin"], fake_labels, sizes)
        if t.contrastive > 0:
            loss_d = loss_d + t.contrastive * F.cross_entropy(out_d["real_contrast"].float(), own)
        if r1:
            loss_d = loss_d + t.r1_gamma * t.r1_every * r1_penalty(out_d["real"], real)
            real = real.detach()
        opt_d.zero_grad(set_to_none=True)
        acc.backward(loss_d)
        gn_d = _grad_norm(D)
        if _finite_or_handle(t.nan_policy, stage, step + 1, "D", loss_d, gn_d):
            opt_d.step()

        # G step
        if toggle_d:
            D.requires_grad_(False)
        if cfg.model.d_tower:
            tower = {"fake_tower": ctx.encoder.image_map(fake, cfg.model.d_tower_block)}
        out_g = D(text, fake=fake, group=group, **tower, **contrast)
        kl = kl_loss(mu, logvar)
        loss_g = g_loss(out_g, t.loss) + t.kl_weight * kl
        if t.contrastive > 0:
            loss_g = loss_g + t.contrastive * F.cross_entropy(out_g["fake_contrast"].float(), own)
        if cfg.model.d_aux:  # what the caption names
            loss_g = loss_g + t.aux_weight * aux_loss(out_g["fake_aux"], fake_labels, sizes, t.aux_confidence)
            if cfg.model.d_aux_twin:  # twin auxiliary classifiers: minus the twin's loss, which cancels the reward for overconfidence
                loss_g = loss_g - t.aux_weight * aux_loss(out_g["fake_aux_twin"], fake_labels, sizes)
            if t.aux_spread > 0:  # variety in what the caption leaves open
                spread = aux_spread_loss(out_g["fake_aux"], fake_labels, sizes, t.group_size)
                loss_g = loss_g + t.aux_spread * spread
        if t.mode_seeking > 0:
            loss_g = loss_g + t.mode_seeking * mode_seeking_loss(fake, z, t.group_size)
        if t.clip_weight > 0:
            seen_by_tower = gaussian_blur(jitter(fake, t.clip_jitter, gen), t.clip_blur)
            clip = clip_match_loss(ctx.encoder.image_features(seen_by_tower), text, t.group_size,
                                   ctx.encoder.logit_scale, extra=hard)
            loss_g = loss_g + t.clip_weight * clip
        opt_g.zero_grad(set_to_none=True)
        acc.backward(loss_g)
        gn_g = _grad_norm(G)
        if _finite_or_handle(t.nan_policy, stage, step + 1, "G", loss_g, gn_g):
            opt_g.step()

        # EMA
        # Ramped up like StyleGAN's: early on G changes fast and a long average would blur it.
        ema_update(ema, acc.unwrap_model(G), min(t.ema_decay, (1 + step) / (10 + step)))
        step += 1
        seen += real.shape[0] * acc.num_processes
        bar.update(1)
        if deadline is not None and step < max_steps and _past(deadline, acc, step):
            log.info("stage %d: time limit of %g min reached at step %d of %d; the stage ends here",
                     stage, minutes, step, max_steps)
            max_steps = step

        # Log
        if step % t.log_every == 0 or step == max_steps:
            row = {"stage": stage, "step": step, "loss_d": loss_d.item(), "loss_g": loss_g.item(), "kl": kl.item(),
                   "d_real": torch.sigmoid(out_d["real"]).mean().item(), "d_wrong": torch.sigmoid(out_d["wrong"]).mean().item(),
                   "d_fake": torch.sigmoid(out_d["fake"]).mean().item(), "grad_norm_d": gn_d.item(), "grad_norm_g": gn_g.item(),
                   "lr_g": opt_g.param_groups[0]["lr"], "img_per_s": seen / max(time.time() - t0, 1e-9)}
            t0, seen = time.time(), 0  # img_per_s: over the steps since the last log line
            if t.clip_weight > 0:
                row["clip_match"] = clip.item()
            if t.contrastive > 0:  # share of real / fake images whose own caption D ranks first
                row["contrast_acc_real"] = (out_d["real_contrast"].argmax(1) == own).float().mean().item()
                row["contrast_acc_fake"] = (out_g["fake_contrast"].argmax(1) == own).float().mean().item()
            if cfg.model.d_aux:  # share of the attributes D's auxiliary classifier reads right
                row["aux_acc_real"] = aux_accuracy(out_d["real_aux"], real_labels, sizes)
                row["aux_acc_fake"] = aux_accuracy(out_g["fake_aux"], fake_labels, sizes)
                if t.aux_spread > 0:  # 0 .. -len(d_aux): -1 per attribute when each group reads fully varied
                    row["aux_spread"] = spread.item()
                if cfg.model.d_aux_twin:  # the twin's reading of the fakes
                    row["aux_twin_acc_fake"] = aux_accuracy(out_g["fake_aux_twin"], fake_labels, sizes)
            row.update(_minibatch_stats(acc.unwrap_model(D)))
            if acc.is_main_process:
                acc.log({f"stage{stage}/{k}": v for k, v in row.items() if k not in ("stage", "step")}, step=step)
                with open(ctx.out / "metrics.jsonl", "a", encoding="utf-8") as f:
                    f.write(json.dumps(row) + "\n")
                bar.set_postfix(d=f"{row['loss_d']:.3f}", g=f"{row['loss_g']:.3f}")
                log.info("stage %d step %d: %s", stage, step, ", ".join(f"{k} {v:.4g}" for k, v in row.items()
                                                                         if isinstance(v, float)))

        # Snapshot
        if acc.is_main_process and (step % t.snapshot_every == 0 or step == max_steps):
            _render_grid(ctx, stage, ema, g1, f"step{step:07d}")

        # Checkpoint
        if step % t.checkpoint_every == 0 or step == max_steps:
            save_checkpoint(acc, ctx.out, stage, step, ema, cfg, ctx.encoder.identity.to_dict(), t.keep_checkpoints)
        if step >= max_steps:
            break
    bar.close()

    if acc.is_main_process:
        save_component(ema.cpu(), ctx.out / "stages" / f"stage{stage}",
                       {"text_encoder": ctx.encoder.identity.to_dict()})
    acc.wait_for_everyone()
    acc.free_memory()


_clock = time.monotonic  # the stages' time limits (a test replaces it)


def _past(deadline: float, acc, step: int) -> bool:
    """Whether the stage's time limit has passed; with several processes, rank 0's clock decides
    (checked every 10 steps), so that every rank stops at the same step."""
    if acc.num_processes == 1:
        return _clock() > deadline
    if step % 10:
        return False
    from accelerate.utils import broadcast

    flag = torch.tensor([float(_clock() > deadline)], device=acc.device)
    return bool(broadcast(flag, from_process=0).item())


def _finite_or_handle(policy: str, stage: int, step: int, who: str, loss: torch.Tensor, grad_norm: torch.Tensor) -> bool:
    """True when the loss and gradient norm are finite; else stop (raise) or skip per policy.
    Reads both from the device together: one synchronisation per check."""
    value, grad_norm = torch.stack([loss.detach().float().reshape(()), grad_norm.to(loss.device)]).tolist()
    if math.isfinite(value) and math.isfinite(grad_norm):
        return True
    msg = f"stage {stage} step {step}: {who} loss is {value:.4g} (gradient norm {grad_norm:.4g})"
    if policy == "stop":
        raise TrainingDiverged(msg + "; the last checkpoint is intact: lower the learning rates or set "
                               "train.nan_policy=skip, then resume with --resume latest")
    log.warning("%s; %s step skipped (train.nan_policy=skip)", msg, who)
    return False


def _minibatch_stats(D: torch.nn.Module) -> dict[str, float]:
    mb = getattr(D.head, "mb", None)
    if mb is None or not hasattr(mb, "T"):
        return {}
    return {"mbd_T_norm": mb.T.detach().float().norm().item()}


def _frozen_stage1(ctx: RunContext) -> torch.nn.Module:
    path = ctx.out / "stages" / "stage1"
    if (path / "model.safetensors").exists() and not ctx.freeze_stage1:
        g1, _ = load_component(path)
    elif ctx.init is not None:
        g1 = copy.deepcopy(ctx.init.stage1)
    else:
        raise ConfigError("stage II needs a trained stage I: train stage 1 first or pass --init-from")
    if g1.resolution != ctx.cfg.model.res1:
        raise ConfigError(f"stage I makes {g1.resolution}px images but model.res1 is {ctx.cfg.model.res1}")
    return g1.eval().requires_grad_(False)


def export_pipeline(ctx: RunContext, folder: Path) -> Path:
    """Write the pipeline folder from the stages' EMA generators."""
    s1 = ctx.out / "stages" / "stage1"
    g1 = load_component(s1)[0] if (s1 / "model.safetensors").exists() and not ctx.freeze_stage1 else ctx.init.stage1
    s2 = ctx.out / "stages" / "stage2"
    g2 = load_component(s2)[0] if (s2 / "model.safetensors").exists() else (ctx.init.stage2 if ctx.init else None)
    if g2 is not None and g2.res_in != g1.resolution:
        g2 = None
    info = {
        "model_id": ctx.out.resolve().name,
        "trained_on": ctx.cfg.data.name if ctx.cfg.data.name == "shapes" else f"folder {Path(ctx.cfg.data.path).name}",
        "config": ctx.cfg.to_dict(),
        "example_prompts": ctx.grid_captions[:8],
    }
    pipe = StackGANPipeline(ctx.encoder, g1.cpu(), g2.cpu() if g2 is not None else None, info)
    pipe.save_pretrained(folder)
    shutil.copyfile(ctx.out / "config.yaml", folder / "training_config.yaml")
    return folder
