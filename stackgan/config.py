"""One typed config for training: dataclass defaults < YAML preset < dotted command-line overrides.

    cfg = load_config("configs/shapes.yaml", ["train.batch_size=32", "model.d1_minibatch=mbstd"])

Every value is type-checked and range-checked before any work starts; an unknown key names
the closest known one.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

MINIBATCH_CHOICES = ("none", "mbd", "mbstd")


@dataclass
class DataConfig:
    name: str = "shapes"  # "shapes" (built in) or "folder" (a user's data at `path`)
    path: str = ""  # folder of a user's data set (name=folder)
    format: str = "auto"  # auto | imagefolder | txt | cub | flowers | coco
    size: int = 20000  # shapes: images in the train split
    test_size: int = 2000  # shapes: images in the test split
    seed: int = 0  # shapes: data seed
    resize: str = "center"  # center | random (StackGAN's 76/64 random crop)
    flip: bool = False  # random horizontal flips (off for shapes: left/right is an attribute)
    num_workers: int = 0  # data-loader worker processes


@dataclass
class TextConfig:
    model: str = "shapes-clip-tiny"  # open_clip model name, or "local-dir:/path" of a saved encoder
    pretrained: str = ""  # local weights file/folder, or an open_clip hub tag (needs network)
    train_steps: int = 0  # > 0: first train this encoder contrastively on the data set's pairs
    train_batch_size: int = 128
    train_lr: float = 1e-3
    # Hard negatives: half of each batch in groups of images that share these attributes
    # (built-in shapes only), so the encoder must tell the other attributes apart.
    train_group_by: list[str] = field(default_factory=list)


@dataclass
class ModelConfig:
    z_dim: int = 100  # noise dimension
    cond_dim: int = 128  # conditioning-augmentation output dimension
    gf: int = 128  # generator base width (stage I starts at 8 * gf channels at 4x4)
    df: int = 64  # discriminator base width
    res_blocks: int = 4  # residual blocks in the stage II generator
    # The stage's condition also modulates every upsampling block of its generator after the batch
    # norm (FiLM / conditional batch norm: per-sample scale and shift from c, starting at 0); off:
    # StackGAN's generators. With --init-from a pipeline without it, the layers are added at zero.
    g1_film: bool = False
    g2_film: bool = False
    # Stage II adds a learned correction, starting at zero, to the stage I image enlarged
    # (bilinear), instead of redrawing the image from its features (StackGAN): an untrained stage
    # II returns stage I's image, so a short stage II keeps what stage I drew.
    g2_skip: bool = False
    res1: int = 64  # stage I resolution
    res2: int = 256  # stage II resolution
    d1_minibatch: str = "mbd"  # none | mbd (minibatch discrimination) | mbstd (minibatch stddev)
    d2_minibatch: str = "mbd"
    mbd_kernels: int = 100  # B in Salimans et al. 2016
    mbd_dims: int = 5  # C in Salimans et al. 2016
    mbd_scope: str = "group"  # group: compare samples of one caption; batch: the whole batch
    mbstd_group: int = 4  # group size of minibatch stddev when mbd_scope=batch
    # batch (StackGAN) | spectral (no batch norm; spectral norm on every D layer) | none (neither;
    # pair it with train.r1_gamma, as DF-GAN pairs its unnormalised discriminator with a gradient penalty)
    d_norm: str = "batch"
    # Extra conv3x3 layers at each resolution of both discriminators' encoders, after each
    # stride-2 block (0: StackGAN's encoder, one conv4x4 per scale).
    d_depth: int = 0
    # The stage I discriminator reads its images enlarged by this factor (nearest neighbour; 1, 2
    # or 4) through one more stride-2 block per doubling (1: StackGAN).
    d1_upsample: int = 1
    d_cond: str = "concat"  # concat (StackGAN: text tiled and concatenated) | projection (Miyato & Koyama 2018)
    # Both discriminators also read the text encoder's frozen image tower: its feature map after
    # block d_tower_block (negative: from the end), pooled to 4x4, joined to their own features.
    d_tower: bool = False
    d_tower_block: int = -1
    # Attributes both discriminators also classify from the image (as AC-GAN / TAC-GAN's auxiliary
    # classifier): trained on the real images' true labels, while the generator learns to make
    # them read what its caption names. Built-in `shapes` only (a folder has no labels); e.g. [shape].
    d_aux: list[str] = field(default_factory=list)
    # With d_aux: a twin classifier in both discriminators learns which values the generator was
    # asked for from its images, and the generator's classification loss is the main classifier's
    # minus the twin's (Twin Auxiliary Classifiers GAN, Gong et al. 2019): AC-GAN's loss alone
    # also rewards images the classifier reads with more confidence than real ones, which narrows
    # what the generator draws.
    d_aux_twin: bool = False


@dataclass
class TrainConfig:
    stages: list[int] = field(default_factory=lambda: [1, 2])  # which stages to train, in order
    max_steps: int = 20000  # optimiser steps per stage
    stage2_steps: int = 0  # steps for stage II; 0 = max_steps
    # Wall-clock budget per stage in minutes (0 = none): a stage that reaches it ends there as if
    # that step were its last (checkpoint, sample grid, saved model), and training goes on.
    max_minutes: float = 0.0
    stage2_minutes: float = 0.0  # budget for stage II; 0 = max_minutes
    batch_size: int = 64  # images per batch per process (groups * group_size)
    group_size: int = 4  # samples per caption in a batch (1 = one sample per caption)
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    lr_decay_every: int = 0  # halve both learning rates every N steps (0 = never)
    kl_weight: float = 2.0
    loss: str = "bce"  # bce (StackGAN: non-saturating cross-entropy) | hinge
    mode_seeking: float = 0.0  # weight of the mode-seeking term (Mao et al. 2019), needs group_size >= 2
    clip_weight: float = 0.0  # weight of the text-image matching loss through the text encoder's image tower
    clip_jitter: float = 0.0  # random shift/zoom (fraction) of fakes before the image tower in the matching loss
    clip_blur: float = 0.0  # Gaussian blur (std in pixels of the fake) before the image tower in the matching loss
    # Share of groups whose mismatched caption is a hard negative: one of the captions nearest to
    # theirs in embedding space that contradicts it (0 = the next group's caption, as in StackGAN).
    hard_negatives: float = 0.0
    # Weight of a contrastive caption loss through the projection discriminator (as XMC-GAN's):
    # D learns to pick each real image's caption among the batch's captions (cross-entropy over
    # its projection terms), and G to make D pick the caption for its fakes.
    contrastive: float = 0.0
    aux_weight: float = 1.0  # weight of the auxiliary attribute classification (model.d_aux) for D and G
    # > 0: the generator's classification loss stops pushing a sample once the classifier gives the
    # value its caption names this probability (0 = always; model.d_aux).
    aux_confidence: float = 0.0
    # Weight of a variety term for the generator (model.d_aux, train.group_size >= 2): over the
    # attributes a caption leaves unnamed, the samples of its group should each read clearly as some
    # value, and as different values (`stackgan.training.losses.aux_spread_loss`; 0 = off).
    aux_spread: float = 0.0
    # R1 penalty (Mescheder et al. 2018): gamma / 2 x the squared gradient of D's logit on real
    # images with their captions, every r1_every steps (scaled by r1_every, as StyleGAN2's lazy R1).
    r1_gamma: float = 0.0
    r1_every: int = 4
    ema_decay: float = 0.999
    mixed_precision: str = "no"  # no | bf16 | auto (bf16 where the hardware has native bf16 units)
    channels_last: bool = True  # channels_last memory format for G, D and the images (faster convolutions)
    seed: int = 0
    log_every: int = 50
    snapshot_every: int = 1000  # sample grid from the EMA generator
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    nan_policy: str = "stop"  # stop | skip
    grid_captions: int = 8  # rows of the fixed sample grid
    grid_samples: int = 6  # noise samples per caption in the grid


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    text: TextConfig = field(default_factory=TextConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class ConfigError(ValueError):
    """A config value or key is wrong; the message says which and how to fix it."""


# The attributes of the built-in shapes data set (stackgan.data.shapes.ATTRIBUTES, named here so
# that reading a config does not import torch).
SHAPE_ATTRIBUTES = ("shape", "colour", "size", "position", "background")


def _is_pow2(n: int) -> bool:
    return n > 0 and (n & (n - 1)) == 0


MAX_DIM = 4096  # z, condition, minibatch-discrimination kernels
MAX_WIDTH = 1024  # generator / discriminator base width
MAX_BATCH = 65536
MAX_SHAPES = 2_000_000  # images of the built-in data set (2M x 3 x 64 x 64 bytes = 24.6 GB at 64 px)


def validate(cfg: Config) -> Config:
    """Range and consistency checks; raises ConfigError with the fix in the message."""
    m, t, d = cfg.model, cfg.train, cfg.data
    checks = [
        # Upper bounds catch typos (an extra zero) before they allocate tens of gigabytes;
        # each is far above any published StackGAN setting.
        (1 <= m.z_dim <= MAX_DIM, f"model.z_dim must be in [1, {MAX_DIM}], got {m.z_dim}"),
        (1 <= m.cond_dim <= MAX_DIM, f"model.cond_dim must be in [1, {MAX_DIM}], got {m.cond_dim}"),
        (1 <= m.gf <= MAX_WIDTH and 1 <= m.df <= MAX_WIDTH,
         f"model.gf and model.df must be in [1, {MAX_WIDTH}] (the paper uses 128 and 64), got {m.gf} and {m.df}"),
        (0 <= m.res_blocks <= 64, f"model.res_blocks must be in [0, 64] (the paper uses 4), got {m.res_blocks}"),
        (_is_pow2(m.res1) and 16 <= m.res1 <= 256, f"model.res1 must be a power of two in [16, 256], got {m.res1}"),
        (_is_pow2(m.res2) and m.res1 < m.res2 <= 1024, f"model.res2 must be a power of two above res1={m.res1}, got {m.res2}"),
        (m.d1_minibatch in MINIBATCH_CHOICES, f"model.d1_minibatch must be one of {MINIBATCH_CHOICES}"),
        (m.d2_minibatch in MINIBATCH_CHOICES, f"model.d2_minibatch must be one of {MINIBATCH_CHOICES}"),
        (1 <= m.mbd_kernels <= MAX_DIM and 1 <= m.mbd_dims <= 256,
         f"model.mbd_kernels must be in [1, {MAX_DIM}] and model.mbd_dims in [1, 256] (Salimans et al.: 100 and 5), "
         f"got {m.mbd_kernels} and {m.mbd_dims}"),
        (m.mbd_scope in ("group", "batch"), "model.mbd_scope must be 'group' or 'batch'"),
        (m.mbstd_group >= 1, "model.mbstd_group must be >= 1"),
        (m.d1_upsample in (1, 2, 4), f"model.d1_upsample must be 1, 2 or 4, got {m.d1_upsample}"),
        (0 <= m.d_depth <= 4, f"model.d_depth must be in [0, 4] (extra conv3x3 layers per discriminator scale), got {m.d_depth}"),
        (m.d_norm in ("batch", "spectral", "none"), f"model.d_norm must be 'batch', 'spectral' or 'none', got {m.d_norm!r}"),
        (m.d_cond in ("concat", "projection"), f"model.d_cond must be 'concat' or 'projection', got {m.d_cond!r}"),
        (t.loss in ("bce", "hinge"), f"train.loss must be 'bce' or 'hinge', got {t.loss!r}"),
        (
            m.mbd_scope != "batch" or "mbstd" not in (m.d1_minibatch, m.d2_minibatch)
            or t.batch_size < 1 or t.batch_size % min(max(m.mbstd_group, 1), t.batch_size) == 0,
            f"train.batch_size ({t.batch_size}) must be a multiple of model.mbstd_group ({m.mbstd_group}) "
            "for minibatch stddev with model.mbd_scope=batch",
        ),
        (t.stages in ([1], [2], [1, 2]), f"train.stages must be [1], [2] or [1, 2], got {t.stages}"),
        (t.max_steps >= 1, "train.max_steps must be >= 1"),
        (t.stage2_steps >= 0, "train.stage2_steps must be >= 0"),
        (t.max_minutes >= 0, "train.max_minutes must be >= 0 (0 = no time limit)"),
        (t.stage2_minutes >= 0, "train.stage2_minutes must be >= 0 (0 = train.max_minutes)"),
        (t.group_size >= 1, "train.group_size must be >= 1"),
        (t.batch_size >= 2, "train.batch_size must be >= 2 (mismatched pairs need two captions)"),
        (t.batch_size <= MAX_BATCH, f"train.batch_size must be <= {MAX_BATCH}, got {t.batch_size}"),
        (
            t.group_size >= 1 and t.batch_size % t.group_size == 0 and t.batch_size // t.group_size >= 2,
            f"train.batch_size ({t.batch_size}) must be a multiple of train.group_size ({t.group_size}) "
            "holding at least two groups",
        ),
        (0 < t.lr_g < 1 and 0 < t.lr_d < 1, "train.lr_g and train.lr_d must be in (0, 1)"),
        (0 <= t.beta1 < 1 and 0 <= t.beta2 < 1, "train.beta1 and train.beta2 must be in [0, 1)"),
        (t.lr_decay_every >= 0, "train.lr_decay_every must be >= 0"),
        (t.kl_weight >= 0, "train.kl_weight must be >= 0"),
        (t.mode_seeking >= 0, "train.mode_seeking must be >= 0"),
        (t.contrastive >= 0, f"train.contrastive must be >= 0, got {t.contrastive}"),
        (t.contrastive == 0 or m.d_cond == "projection",
         "train.contrastive needs the projection discriminator: set model.d_cond=projection"),
        (t.aux_weight >= 0, f"train.aux_weight must be >= 0, got {t.aux_weight}"),
        (not m.d_aux or d.name == "shapes",
         "model.d_aux needs the attribute labels of the built-in shapes data set; set model.d_aux=[]"),
        (all(a in SHAPE_ATTRIBUTES for a in m.d_aux) and len(set(m.d_aux)) == len(m.d_aux),
         f"model.d_aux must name distinct attributes among {list(SHAPE_ATTRIBUTES)}, got {m.d_aux}"),
        (not m.d_aux_twin or m.d_aux, "model.d_aux_twin needs the auxiliary classifier: set model.d_aux, e.g. [shape]"),
        (0 <= t.aux_confidence < 1, f"train.aux_confidence must be in [0, 1) (0 = off), got {t.aux_confidence}"),
        (t.aux_spread >= 0, f"train.aux_spread must be >= 0 (0 = off), got {t.aux_spread}"),
        (t.aux_spread == 0 or (m.d_aux and t.group_size >= 2),
         "train.aux_spread needs the auxiliary classifier (model.d_aux) and groups (train.group_size >= 2)"),
        (t.r1_gamma >= 0, f"train.r1_gamma must be >= 0 (0 = no R1 penalty), got {t.r1_gamma}"),
        (t.r1_every >= 1, f"train.r1_every must be >= 1, got {t.r1_every}"),
        (t.mode_seeking == 0 or t.group_size >= 2, "train.mode_seeking needs train.group_size >= 2"),
        (t.clip_weight >= 0, "train.clip_weight must be >= 0"),
        (0 <= t.clip_jitter <= 0.5, f"train.clip_jitter must be in [0, 0.5], got {t.clip_jitter}"),
        (0 <= t.clip_blur <= 4, f"train.clip_blur must be in [0, 4] (pixels), got {t.clip_blur}"),
        (0 <= t.hard_negatives <= 1, f"train.hard_negatives must be in [0, 1] (a share of groups), got {t.hard_negatives}"),
        (0 <= t.ema_decay < 1, "train.ema_decay must be in [0, 1)"),
        (t.mixed_precision in ("no", "bf16", "auto"), "train.mixed_precision must be 'no', 'bf16' or 'auto'"),
        (t.nan_policy in ("stop", "skip"), "train.nan_policy must be 'stop' or 'skip'"),
        (min(t.log_every, t.snapshot_every, t.checkpoint_every, t.keep_checkpoints) >= 1,
         "train.log_every, snapshot_every, checkpoint_every and keep_checkpoints must be >= 1"),
        (t.grid_captions >= 1 and t.grid_samples >= 1, "train.grid_captions and grid_samples must be >= 1"),
        (d.name in ("shapes", "folder"), f"data.name must be 'shapes' or 'folder', got {d.name!r}"),
        (d.name != "folder" or bool(d.path), "data.name=folder needs data.path=/path/to/your/images"),
        (d.size >= 1 and d.test_size >= 1, "data.size and data.test_size must be >= 1"),
        (d.name != "shapes" or max(d.size, d.test_size) <= MAX_SHAPES,
         f"data.size and data.test_size of the built-in shapes data set must be <= {MAX_SHAPES:,} "
         f"(its images are held in memory), got {d.size} and {d.test_size}"),
        (d.resize in ("center", "random"), "data.resize must be 'center' or 'random'"),
        (d.num_workers >= 0, "data.num_workers must be >= 0"),
        (cfg.text.train_steps >= 0, "text.train_steps must be >= 0"),
        (not cfg.text.train_group_by or d.name == "shapes",
         "text.train_group_by needs the attribute labels of the built-in shapes data set; set text.train_group_by=[]"),
        (d.name != "shapes" or all(a in SHAPE_ATTRIBUTES for a in cfg.text.train_group_by),
         f"text.train_group_by must name attributes among {list(SHAPE_ATTRIBUTES)}, got {cfg.text.train_group_by}"),
        (bool(cfg.text.model), "text.model must name an open_clip model or local-dir:/path"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    try:
        path_exists = d.name != "folder" or Path(d.path).exists()
    except (OSError, ValueError):  # a NUL byte or an over-long name
        path_exists = False
    if not path_exists:
        raise ConfigError(f"data.path {d.path!r} does not exist: point it at a folder of captioned images")
    return cfg


def _coerce(value: Any, typ: Any, key: str) -> Any:
    origin = typing.get_origin(typ)
    if origin is list:
        (inner,) = typing.get_args(typ)
        if not isinstance(value, list):
            value = [value]
        return [_coerce(v, inner, key) for v in value]
    if typ is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if typ is float:
        if isinstance(value, str):  # PyYAML (YAML 1.1) reads "1e-3" (no dot) as a string
            try:
                value = float(value) if math.isfinite(float(value)) else value
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        try:
            number = float(value)
        except OverflowError:  # an integer beyond float range
            number = math.inf
        if not math.isfinite(number):
            raise ConfigError(f"{key} must be a finite number, got {value!r}")
        return number
    if typ is str:
        if value is None:
            return ""
        if isinstance(value, bool):  # YAML 1.1 reads the words no/yes/off/on as booleans
            return "yes" if value else "no"
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return str(value)
    raise TypeError(typ)


def _merge(obj: Any, values: dict[str, Any], prefix: str = "") -> None:
    hints = typing.get_type_hints(type(obj))
    names = [f.name for f in dataclasses.fields(obj)]
    for key, value in values.items():
        full = f"{prefix}{key}"
        if key not in names:
            known = [f"{prefix}{n}" for n in names]
            close = difflib.get_close_matches(full, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(known)}"
            raise ConfigError(f"unknown config key {full!r}{hint}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{full} is a section; set its keys, e.g. {full}.{dataclasses.fields(current)[0].name}=...")
            _merge(current, value, full + ".")
        else:
            setattr(obj, key, _coerce(value, hints[key], full))


def parse_override(item: str) -> dict[str, Any]:
    """'train.batch_size=32' -> {'train': {'batch_size': 32}} (values parsed as YAML)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like section.key=value, e.g. train.max_steps=50")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except Exception:  # YAMLError, and ValueError / IndexError / RecursionError from PyYAML's constructors
        value = raw
    out: dict[str, Any] = {}
    node = out
    parts = key.strip().split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


def config_from_dict(values: dict[str, Any]) -> Config:
    cfg = Config()
    _merge(cfg, values or {})
    return validate(cfg)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """defaults < YAML preset at `path` < `overrides` ("section.key=value"), validated."""
    cfg = Config()
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"config file {str(path)!r} not found")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"config file {str(path)!r} cannot be read as UTF-8 text: {e}") from None
        try:
            data = yaml.safe_load(text) or {}
        except Exception as e:  # YAMLError, and ValueError / IndexError / RecursionError from PyYAML's constructors
            raise ConfigError(f"{path} is not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path} must hold a mapping of sections (data, text, model, train)")
        _merge(cfg, data)
    for item in overrides:
        _merge(cfg, parse_override(item))
    return validate(cfg)


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
