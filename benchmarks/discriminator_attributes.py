"""Which caption attributes does a trained discriminator check? `python -m benchmarks.discriminator_attributes RUN_DIR`.

For a run on the built-in `shapes` data set: real training images with one of their own
captions, against the same caption with one named attribute changed (another shape, another
colour, ...; the changed caption is a real caption of the data set naming exactly those
values). The discriminator's matching logit should be higher for the own caption. Per
attribute it reports how often it is (0.5 = the discriminator cannot tell that attribute) and
the mean margin. The generator learns an attribute from the discriminator only when this
share is high, so a low share for one attribute explains a generator that ignores it. For
reference, the same pairs are scored by the text encoder's frozen image tower (cosine), when
it has one.

Writes DIR/discriminator_attributes.json and .md when --out is given.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import torch

from benchmarks import write_json


def _checkpoint(run: Path, stage: int | None, name: str | None) -> tuple[Path, int]:
    from stackgan.training.checkpoint import CheckpointError, find_checkpoint

    if name:
        found = find_checkpoint(run, str(run / "checkpoints" / name) if not Path(name).is_dir() else name)
    elif stage is None:
        found = find_checkpoint(run, "latest")
    else:
        folders = sorted((run / "checkpoints").glob(f"stage{stage}-step*"))
        if not folders:
            raise CheckpointError(f"no stage {stage} checkpoint in {run / 'checkpoints'}; train that stage first")
        found = find_checkpoint(run, str(folders[-1]))
    return found["path"], int(found["meta"]["stage"])


def measure(run: Path, stage: int | None = None, checkpoint: str | None = None, images: int = 512,
            seed: int = 0) -> dict:
    from safetensors.torch import load_file

    from stackgan.config import ConfigError, load_config
    from stackgan.data import build_dataset
    from stackgan.data.shapes import ATTRIBUTES
    from stackgan.text import load_text_encoder
    from stackgan.training.data import CaptionTable
    from stackgan.training.loop import build_models, caption_embeddings, d_tower_channels

    run = Path(run)
    if not (run / "config.yaml").is_file():
        raise SystemExit(f"{run} is not a training run folder (no config.yaml)")
    cfg = load_config(run / "config.yaml")
    if cfg.data.name != "shapes":
        raise ConfigError(f"{run} was trained on data.name={cfg.data.name!r}; this check needs the attributes "
                          "of the built-in shapes data set")
    path, stage = _checkpoint(run, stage, checkpoint)
    weights = path / "model_1.safetensors"  # Accelerate numbers the prepared models: G, then D
    if not weights.is_file():
        raise SystemExit(f"{path} holds no discriminator weights (model_1.safetensors)")
    own_encoder = run / "text_encoder"
    model = f"local-dir:{own_encoder}" if (own_encoder / "open_clip_model.safetensors").exists() else cfg.text.model
    encoder = load_text_encoder(model, cfg.text.pretrained)
    dataset = build_dataset(cfg.data, "train")
    table = CaptionTable.build(dataset)
    emb = caption_embeddings(cfg, encoder, dataset, table)
    _, D = build_models(cfg, stage, encoder.dim, d_tower_channels(cfg, encoder))
    D.load_state_dict(load_file(str(weights)))
    D.eval()

    by_named: dict[frozenset, int] = {}
    for c, named in enumerate(table.named_attributes(dataset)):
        by_named.setdefault(frozenset(named.items()), c)
    pixels = dataset.images(cfg.model.res1 if stage == 1 else cfg.model.res2)
    group = cfg.train.group_size if cfg.train.batch_size % cfg.train.group_size == 0 else 1
    unit_text = torch.nn.functional.normalize(emb.float(), dim=1)
    rng = random.Random(seed)
    rows = {}
    for attr in ATTRIBUTES:
        idx, own, changed = [], [], []
        for _ in range(200 * images):  # captions that name `attr` and have a twin differing only there
            if len(idx) == images:
                break
            i = rng.randrange(len(dataset))
            k = rng.randrange(len(table.per_image[i]))
            named = dataset.caption_attributes(i)[k]
            if attr not in named:
                continue
            other = rng.choice([v for v in ATTRIBUTES[attr] if v != named[attr]])
            twin = by_named.get(frozenset({**named, attr: other}.items()))
            if twin is not None:
                idx.append(i)
                own.append(table.per_image[i][k])
                changed.append(twin)
        n = len(idx) - len(idx) % group
        if n == 0:
            rows[attr] = {"pairs": 0, "own_wins": None, "margin": None, "tower_own_wins": None}
            continue
        own_logit, changed_logit = [], []
        chunk = max(group, 64 // group * group)  # whole minibatch-stddev groups per call
        with torch.no_grad():
            for s in range(0, n, chunk):
                e = min(s + chunk, n)
                real = pixels[idx[s:e]].float() / 127.5 - 1
                tower = ({"real_tower": encoder.image_map(real, cfg.model.d_tower_block)} if cfg.model.d_tower else {})
                out = D(emb[own[s:e]], real=real, wrong_text=emb[changed[s:e]], group=group, **tower)
                own_logit.append(out["real"])
                changed_logit.append(out["wrong"])
        a, b = torch.cat(own_logit), torch.cat(changed_logit)
        rows[attr] = {"pairs": n, "own_wins": float((a > b).float().mean()), "margin": float((a - b).mean()),
                      "tower_own_wins": None}
        if encoder.has_image_tower:  # reference: the text encoder's own (frozen) image tower, cosine to each caption
            with torch.no_grad():
                f = torch.cat([encoder.image_features(pixels[idx[s:s + 256]].float() / 127.5 - 1).float()
                               for s in range(0, n, 256)])[:n]
            wins = (f * unit_text[own[:n]]).sum(1) > (f * unit_text[changed[:n]]).sum(1)
            rows[attr]["tower_own_wins"] = float(wins.float().mean())
    return {"run": str(run), "checkpoint": str(path), "stage": stage, "images_per_attribute": images, "seed": seed,
            "attributes": rows}


def markdown(res: dict) -> str:
    lines = [f"Discriminator of stage {res['stage']}, {res['checkpoint']}: own caption against the same caption "
             "with one attribute changed, real training images.", "",
             "| attribute | pairs | own caption scores higher | mean logit margin | text encoder's image tower |",
             "|---|---:|---:|---:|---:|"]
    for attr, r in res["attributes"].items():
        if r["own_wins"] is None:
            lines.append(f"| {attr} | 0 | | | |")
        else:
            tower = "" if r["tower_own_wins"] is None else f"{r['tower_own_wins']:.2f}"
            lines.append(f"| {attr} | {r['pairs']} | {r['own_wins']:.2f} | {r['margin']:.2f} | {tower} |")
    lines += ["", "Last column, for reference: the same pairs scored by the text encoder's own frozen image tower "
              "(cosine of image and caption embeddings, no training on the pairs)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run", help="a training run folder (with config.yaml and checkpoints/)")
    p.add_argument("--stage", type=int, choices=(1, 2), default=None, help="default: the latest checkpoint's stage")
    p.add_argument("--checkpoint", default=None, help="a checkpoint folder name (default: the stage's latest)")
    p.add_argument("--images", type=int, default=512, help="image/caption pairs per attribute")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="folder for the JSON and markdown table")
    args = p.parse_args(argv)
    if args.images < 1:
        p.error(f"--images must be >= 1, got {args.images}")
    t0 = time.time()
    res = measure(Path(args.run), args.stage, args.checkpoint, args.images, args.seed)
    res["seconds"] = time.time() - t0
    table = markdown(res)
    print(table)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "discriminator_attributes.json", res)
        (out / "discriminator_attributes.md").write_text(table, encoding="utf-8")
        print(f"wrote {out / 'discriminator_attributes.json'} and .md")


if __name__ == "__main__":
    main()
