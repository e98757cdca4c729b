"""Train a small open_clip model contrastively on a data set's (image, caption) pairs.

This is how the built-in `shapes` data set gets its text encoder, as StackGAN trained its
char-CNN-RNN on birds. open_clip's own model code and `ClipLoss` do the work; the result is
saved as a folder that loads through `load_text_encoder("local-dir:...")`.
"""

from __future__ import annotations

import logging
import math
import random
from pathlib import Path

import torch

from .encoder import CLIP_MEAN, CLIP_STD, TextEncoder, _open_clip, load_text_encoder, save_text_encoder

log = logging.getLogger(__name__)


def _prep(images_u8: torch.Tensor, size: int) -> torch.Tensor:
    x = images_u8.float() / 255.0
    if x.shape[-1] != size:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    mean = torch.tensor(CLIP_MEAN, device=x.device)[:, None, None]
    std = torch.tensor(CLIP_STD, device=x.device)[:, None, None]
    return (x - mean) / std


def train_text_encoder(
    dataset,
    model_name: str = "shapes-clip-tiny",
    steps: int = 1000,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    out_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
    group_by: tuple[str, ...] | list[str] = (),
    group_size: int = 8,
) -> TextEncoder:
    """Contrastive training (CLIP loss) on (image, random caption) pairs of `dataset`.

    Args:
        dataset:    a `CaptionedImages` data set.
        model_name: an open_clip model config name (see stackgan/text/model_configs).
        steps, batch_size, lr, seed: optimisation settings (AdamW, cosine decay).
        out_dir:    when given, the encoder is saved there (open_clip local-dir layout).
        group_by:   attributes of a data set that has them (`shapes`): half of each batch is made
                    of groups of `group_size` images that share these attributes (hard negatives).
                    Without them the loss is met by the attributes that are easiest to see (on
                    `shapes`: colour and background) and the text tower learns to ignore the rest
                    ("a red circle" and "a red square" end up with almost the same embedding).
    Returns:
        the trained encoder, frozen.
    """
    from tqdm.auto import tqdm

    open_clip = _open_clip()
    torch.manual_seed(seed)
    rng = random.Random(seed)
    draw = _batch_drawer(dataset, rng, batch_size, tuple(group_by), group_size)
    model = open_clip.create_model(model_name, device=device)
    tokenizer = open_clip.get_tokenizer(model_name)
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    images = dataset.images(size) if hasattr(dataset, "images") else None
    loss_fn = open_clip.ClipLoss()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 50) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    model.train()
    token_cache: dict[str, torch.Tensor] = {}
    bar = tqdm(range(steps), desc="text encoder", disable=not progress)
    for step in bar:
        idx = draw()
        if images is not None:
            batch = images[idx]
        else:
            batch = torch.stack([dataset.image(i, size) for i in idx])
        caps = [rng.choice(dataset.captions(i)) for i in idx]
        new = [c for c in dict.fromkeys(caps) if c not in token_cache]
        if new:  # open_clip's tokenizer costs ~1 ms per caption: tokenize each caption once
            token_cache.update(zip(new, tokenizer(new)))
        ids = torch.stack([token_cache[c] for c in caps])
        img_f, txt_f, scale = model(_prep(batch.to(device), size), ids.to(device))
        loss = loss_fn(img_f, txt_f, scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    encoder = TextEncoder(model, tokenizer, model_name)
    if out_dir is not None:
        save_text_encoder(encoder, out_dir)
        encoder = load_text_encoder("local-dir:" + str(out_dir), device=device)
    return encoder


def _batch_drawer(dataset, rng: random.Random, batch_size: int, group_by: tuple[str, ...], group_size: int):
    """A function returning the image indices of one batch (see `group_by` above)."""
    if not group_by:
        return lambda: [rng.randrange(len(dataset)) for _ in range(batch_size)]
    labels = getattr(dataset, "labels", None)
    if not isinstance(labels, dict):
        raise ValueError("text.train_group_by needs a data set with attribute labels (the built-in shapes); "
                         "set text.train_group_by=[] for this one")
    unknown = [a for a in group_by if a not in labels]
    if unknown:
        raise ValueError(f"text.train_group_by names unknown attributes {unknown}; this data set has {sorted(labels)}")
    if not 2 <= group_size <= batch_size // 2:
        raise ValueError(f"grouped batches need 2 <= group size ({group_size}) <= batch size / 2 ({batch_size // 2})")
    keys: dict[tuple, list[int]] = {}
    for i, key in enumerate(zip(*(labels[a].tolist() for a in group_by))):
        keys.setdefault(key, []).append(i)
    buckets = [b for b in keys.values() if len(b) >= group_size]
    if not buckets:
        raise ValueError(f"no {group_size} images share {list(group_by)}: lower the group size or group by fewer attributes")

    def draw() -> list[int]:
        idx = []
        while len(idx) < batch_size // 2:
            idx += rng.sample(rng.choice(buckets), group_size)
        idx = idx[: batch_size // 2]
        return idx + [rng.randrange(len(dataset)) for _ in range(batch_size - len(idx))]

    return draw


@torch.inference_mode()
def caption_retrieval(encoder: TextEncoder, dataset, candidates: int = 100, trials: int = 1000, seed: int = 0,
                      pool: int = 2000) -> dict:
    """Image -> caption R@1 among `candidates` captions of distinct images (chance = 1/candidates).

    A pool of held-out images, one random caption each, is embedded once; each trial draws
    `candidates` images of the pool and asks whether the first image's caption ranks first.
    """
    rng = random.Random(seed)
    n = min(pool, len(dataset))
    if n < candidates:
        raise ValueError(f"caption retrieval needs at least {candidates} images, the data set has {len(dataset)}")
    size = encoder.model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    idx = rng.sample(range(len(dataset)), n)
    img = encoder.encode_images(torch.stack([dataset.image(i, size) for i in idx]))
    txt = encoder.encode([rng.choice(dataset.captions(i)) for i in idx])
    sims = img @ txt.T  # [n, n]
    hits = 0
    for _ in range(trials):
        cand = rng.sample(range(n), candidates)
        hits += int(sims[cand[0], cand].argmax().item() == 0)
    return {"r_at_1": hits / trials, "chance": 1 / candidates, "candidates": candidates, "trials": trials, "pool": n}


@torch.inference_mode()
def attribute_readout(encoder: TextEncoder, dataset, images: int = 500, seed: int = 0) -> dict:
    """What the encoder tells apart, per attribute of the built-in shapes data set.

    - `zero_shot`: held-out images classified among one caption per value of the attribute
      (that attribute named alone), against chance 1 / number of values;
    - `text_cosine`: mean cosine between captions that differ only in that attribute (the
      other attributes named and fixed); near 1 means the generator cannot tell the captions apart.
    """
    from ..data.shapes import ATTRIBUTES, make_caption

    rng = random.Random(seed)
    size = encoder.model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    idx = rng.sample(range(len(dataset)), min(images, len(dataset)))
    img = encoder.encode_images(torch.stack([dataset.image(i, size) for i in idx]))
    out = {}
    for name, values in ATTRIBUTES.items():
        only = {k: k == name for k in ATTRIBUTES}
        ref = dataset.attributes(idx[0]).named()
        prompts = encoder.encode([make_caption(random.Random(f"{seed}-{name}"), {**ref, name: v}, only) for v in values])
        truth = torch.tensor([values.index(getattr(dataset.attributes(i), name)) for i in idx])
        acc = float(((img @ prompts.T).argmax(1) == truth).float().mean())
        cos = []
        for i in idx[:50]:
            named = dataset.attributes(i).named()
            # The same template and synonyms for every value (one seed per image): only `name` differs.
            emb = encoder.encode([make_caption(random.Random(f"{seed}-{name}-{i}"), {**named, name: v},
                                               {k: True for k in ATTRIBUTES}) for v in values])
            sims = emb @ emb.T
            n = len(values)
            cos.append(float((sims.sum() - n) / (n * n - n)))
        out[name] = {"zero_shot": acc, "chance": 1 / len(values), "text_cosine": sum(cos) / len(cos)}
    return out
