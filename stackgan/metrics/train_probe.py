"""Train the shapes probe on real train-split images and write it where the benchmark loads it.

    python -m stackgan.metrics.train_probe --out stackgan/assets/probe            # ~30 min on 2 busy CPU cores
    python -m stackgan.metrics.train_probe --out /tmp/probe --train-size 2000 --epochs 1   # smoke test

The probe sees 64 px images. Training adds mild corruptions (pixel noise, blur, a down-and-up
resize) so that it reads generated and resized images the way it reads clean renders; the
held-out accuracy it reports (and stores in config.json) is on clean test-split renders,
plus the same at 32 px and 128 px resized to 64 px.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from typing import Any

import torch
import torch.nn.functional as F

from ..data.shapes import ATTRIBUTES, ShapesDataset
from ..training.losses import gaussian_blur
from .probe import PROBE_RESOLUTION, PROBE_VERSION, RESIZE_MODE, ShapesProbe, prepare, save_probe

log = logging.getLogger(__name__)

# Mild corruptions (noise, blur, down-and-up resize), so generated and resized images read like clean
# renders. "light" keeps the sub-pixel cues that tell a circle from a hexagon at 64 px.
AUGMENT = {
    "standard": {"noise": 0.03, "p_blur": 0.3, "blur": (0.3, 1.0), "p_resize": 0.3, "factors": (0.5, 0.75)},
    "light": {"noise": 0.02, "p_blur": 0.15, "blur": (0.3, 0.6), "p_resize": 0.15, "factors": (0.75,)},
}


def augment(x: torch.Tensor, g: torch.Generator, strength: str = "standard") -> torch.Tensor:
    """float `[B, 3, 64, 64]` in [0, 1] -> the same, mildly corrupted (see AUGMENT[strength])."""
    a = AUGMENT[strength]
    b = x.shape[0]
    x = x.clone()
    u = torch.rand(3, generator=g)
    sel = torch.rand(b, generator=g) < a["p_blur"]
    if sel.any():
        lo, hi = a["blur"]
        x[sel] = gaussian_blur(x[sel], lo + (hi - lo) * float(u[0]))
    sel = torch.rand(b, generator=g) < a["p_resize"]
    if sel.any():
        small = int(PROBE_RESOLUTION * a["factors"][int(u[1] * len(a["factors"]))])
        y = F.interpolate(x[sel], size=(small, small), mode="bilinear", antialias=True, align_corners=False)
        x[sel] = F.interpolate(y, size=(PROBE_RESOLUTION,) * 2, mode="bilinear", antialias=True, align_corners=False)
    sigma = a["noise"] * torch.rand(b, 1, 1, 1, generator=g)
    return (x + sigma * torch.randn(x.shape, generator=g)).clamp(0, 1)


@torch.inference_mode()
def accuracy(probe: ShapesProbe, images: torch.Tensor, labels: dict[str, Any]) -> dict[str, float]:
    """Share of images whose attribute the probe reads correctly, per attribute. images: uint8 `[N, 3, H, W]`."""
    pred = probe.predict(images)
    return {k: float((pred[k].numpy() == labels[k]).mean()) for k in ATTRIBUTES}


def train_probe(out: str, train_size: int = 30000, test_size: int = 5000, epochs: int = 8, batch_size: int = 128,
                lr: float = 2e-3, seed: int = 0, max_minutes: float = 60.0, init_from: str | None = None,
                augment_strength: str = "standard") -> dict[str, Any]:
    """Train (or continue training `init_from`), evaluate on the test split, save to `out`; returns the config written."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    train = ShapesDataset(train_size, "train", seed=0, cache_dir="")
    test = ShapesDataset(test_size, "test", seed=0, cache_dir="")
    log.info("rendering %d train and %d test images", train_size, test_size)
    x_train = train.images(PROBE_RESOLUTION)
    y_train = {k: torch.from_numpy(v) for k, v in train.labels.items()}
    x_test = test.images(PROBE_RESOLUTION)

    previous: list[dict[str, Any]] = []
    if init_from:
        from .probe import load_probe

        probe, old = load_probe(init_from)
        probe = probe.requires_grad_(True)
        previous = [{"training": {k: v for k, v in old.get("training", {}).items() if k != "previous_runs"},
                     "training_data": old.get("training_data"), "test_accuracy": old.get("test_accuracy", {}).get("per_attribute")}]
        previous += old.get("training", {}).get("previous_runs", [])
    else:
        probe = ShapesProbe()
    opt = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=1e-4)
    steps_per_epoch = train_size // batch_size
    total = steps_per_epoch * epochs
    start, step = time.time(), 0
    history = []
    for epoch in range(epochs):
        probe.train()
        perm = torch.randperm(train_size, generator=g)
        running = 0.0
        for i in range(steps_per_epoch):
            # Progress is whichever is further along, steps or the time budget, so that the learning
            # rate is annealed (warm-up, then cosine to zero) even when a busy machine cuts training short.
            progress = max(step / total, (time.time() - start) / (max_minutes * 60))
            if progress >= 1:
                break
            for group in opt.param_groups:
                group["lr"] = lr * min(1.0, progress / 0.05) * 0.5 * (1 + math.cos(math.pi * progress))
            idx = perm[i * batch_size : (i + 1) * batch_size]
            x = augment(prepare(x_train[idx]), g, augment_strength)
            logits = probe(x)
            loss = sum(F.cross_entropy(logits[k], y_train[k][idx]) for k in ATTRIBUTES)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            running += loss.item()
            if step % 50 == 0:
                log.info("epoch %d step %d/%d loss %.4f (%.0f s)", epoch, step, total, running / 50, time.time() - start)
                running = 0.0
        acc = accuracy(probe, x_test[:1000], {k: v[:1000] for k, v in test.labels.items()})
        history.append({"epoch": epoch, "step": step, "test_acc_first_1000": acc})
        log.info("epoch %d: test accuracy (1000 images) %s", epoch, json.dumps(acc))
        if step < (epoch + 1) * steps_per_epoch:
            log.warning("stopped at the %.0f-minute limit after %d of %d steps", max_minutes, step, total)
            break

    probe.eval()
    acc = accuracy(probe, x_test, test.labels)
    robustness = {}
    for res in (32, 128):  # the same test images rendered at another size, resized to 64 px
        robustness[f"{res}px_resized"] = accuracy(probe, test.images(res), test.labels)
    info = {
        "training_data": {"dataset": "shapes", "split": "train", "seed": 0, "size": train_size, "resolution": PROBE_RESOLUTION,
                          "augmentation": {"strength": augment_strength, **AUGMENT[augment_strength]}},
        "training": {"epochs": epochs, "steps": step, "batch_size": batch_size, "optimizer": "AdamW wd 1e-4; lr warm-up 5% then cosine to 0 over max(step, time) progress",
                     "max_minutes": max_minutes,
                     "lr": lr, "seed": seed, "seconds": round(time.time() - start, 1), "history": history,
                     "init_from": str(init_from) if init_from else None, "previous_runs": previous},
        "test_accuracy": {"dataset": "shapes", "split": "test", "seed": 0, "size": test_size, "per_attribute": acc,
                          "resized_from_other_resolutions": robustness, "resize_mode": RESIZE_MODE},
    }
    save_probe(probe, out, info)
    cfg = json.loads((__import__("pathlib").Path(out) / "config.json").read_text(encoding="utf-8"))
    log.info("probe %s written to %s; test accuracy %s", PROBE_VERSION, out, json.dumps(acc))
    return cfg


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Train the shapes attribute probe used by `stackgan eval`.")
    p.add_argument("--out", required=True, help="folder for config.json + model.safetensors (stackgan/assets/probe)")
    p.add_argument("--train-size", type=int, default=30000)
    p.add_argument("--test-size", type=int, default=5000)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-minutes", type=float, default=60.0, help="anneal and stop (and still save) within this long")
    p.add_argument("--init-from", default=None, help="continue training this probe folder")
    p.add_argument("--augment", default="standard", choices=sorted(AUGMENT), help="corruption strength during training")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    cfg = train_probe(args.out, args.train_size, args.test_size, args.epochs, args.batch_size, args.lr, args.seed,
                      args.max_minutes, args.init_from, args.augment)
    print(json.dumps(cfg["test_accuracy"]["per_attribute"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
