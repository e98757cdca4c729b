"""Speed benchmark: `python -m benchmarks --out DIR [--device cpu|cuda] [--quick]`.

Prints tables and writes DIR/bench.json: the machine, the dense matmul rate (fp32, bf16),
FLOPs per image of each generator, generation time (plain eager fp32 baseline vs the
optimised path, measured in the same run), training throughput (fp32 vs bf16 autocast) and
text-encoder throughput (with and without the embedding cache).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from benchmarks import write_json
from stackgan.models.stage1 import Stage1Discriminator, Stage1Generator
from stackgan.models.stage2 import Stage2Discriminator, Stage2Generator
from stackgan.optimize import bf16_available, optimize_generator
from stackgan.pipeline import StackGANPipeline
from stackgan.training.losses import d_loss, g_loss, kl_loss

PAPER = {"z_dim": 100, "cond_dim": 128, "gf": 128, "df": 64, "res_blocks": 4, "res1": 64, "res2": 256, "text_dim": 512}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timeit(fn, device: torch.device, repeats: int, warmup: int = 1) -> float:
    """Median seconds of `repeats` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def timeit_interleaved(fns: dict, device: torch.device, repeats: int, warmup: int = 1) -> dict[str, dict]:
    """{name: {"best": s, "median": s}} over `repeats` rounds that each call every function once,
    in turn: this machine's speed drifts by 2-3 x from minute to minute (other tenants), so timing
    the variants one after another can hand a slow spell to one of them; taking turns gives
    every variant the same spells, and the best round is the one least disturbed, as the floor's
    matmul rate is a best-of too."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    _sync(device)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[k].append(time.perf_counter() - t0)
    return {k: {"best": min(v), "median": statistics.median(v)} for k, v in times.items()}


def machine(device: torch.device) -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "device": str(device), "native_bf16": bf16_available(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def matmul_rate(device: torch.device, dtype: torch.dtype, n: int, min_seconds: float = 0.25) -> float:
    """Sustained GFLOP/s of back-to-back n x n products, timed over at least `min_seconds`: a
    product timed alone also pays the worker threads' wake-up, which understated bf16 on 2 cores
    by up to half (957 against 1,869 GFLOP/s) and so made the floor too loose."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    _sync(device)
    reps = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        _sync(device)
        sec = time.perf_counter() - t0
        if sec >= min_seconds:
            return 2 * n**3 * reps / sec / 1e9
        reps *= 2


def matmul_rates(device: torch.device, n: int, n_bf16: int, rounds: int) -> dict:
    """Best of `rounds` measurements per dtype: on a shared machine a single one can land in a
    noisy moment and understate the hardware, which would make the floor too loose."""
    fp32 = [matmul_rate(device, torch.float32, n) for _ in range(rounds)]
    bf16 = [matmul_rate(device, torch.bfloat16, n_bf16) for _ in range(rounds)]
    return {"fp32": max(fp32), "bf16": max(bf16), "fp32_all": fp32, "bf16_all": bf16}


def flops_per_image(g1: torch.nn.Module, g2: torch.nn.Module | None, text_dim: int) -> tuple[float, float]:
    """(stage I, stage I + II) FLOPs per image, counted by torch.utils.flop_counter."""
    from torch.utils.flop_counter import FlopCounterMode

    dev = next(g1.parameters()).device
    text, z = torch.randn(2, text_dim, device=dev), torch.randn(2, g1.z_dim, device=dev)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        low = g1.eval()(text, z)[0]
    f1 = fc.get_total_flops() / 2
    f2 = f1
    if g2 is not None:
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            g2.eval()(low, text)
        f2 = f1 + fc.get_total_flops() / 2
    return f1, f2


def rss_mb() -> float:
    try:
        with open("/proc/self/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith("VmRSS"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def bench_generation(name: str, g1, g2, text_dim: int, device: torch.device, batches: list[int], floor_rate: float,
                     repeats: int, compile_batches: tuple[int, ...] = ()) -> list[dict]:
    """Baseline vs optimised per (stage, batch); `torch.compile` of the optimised generators is
    measured for the batch sizes in `compile_batches` (each new shape compiles again)."""
    from stackgan.optimize import CompiledOrEager

    rows = []
    use_bf16 = bf16_available(device)
    f1, f12 = flops_per_image(g1, g2, text_dim)
    g1, g2 = g1.to(device).eval(), g2.to(device).eval() if g2 is not None else None
    o1 = optimize_generator(g1)
    o2 = optimize_generator(g2) if g2 is not None else None
    # the optimised path's own FLOPs: fewer, as the upsampling blocks run as transposed convolutions
    e1, e12 = flops_per_image(o1, o2, text_dim)
    b1 = optimize_generator(g1, bf16_weights=True) if use_bf16 else None
    b2 = optimize_generator(g2, bf16_weights=True) if use_bf16 and g2 is not None else None
    n1 = optimize_generator(g1, deconv=False, bf16_weights=use_bf16)
    n2 = optimize_generator(g2, deconv=False, bf16_weights=use_bf16) if g2 is not None else None
    for stage in ([1, 2] if g2 is not None else [1]):
        flops, executed = (f1, e1) if stage == 1 else (f12, e12)
        for bs in batches:
            text = torch.randn(bs, text_dim, device=device)
            z = torch.randn(bs, g1.z_dim, device=device)

            def plain():
                with torch.no_grad():
                    low = g1(text, z)[0]
                    if stage == 2:
                        g2(low, text)

            def fast(bf16: bool):
                m1, m2 = (b1, b2) if bf16 else (o1, o2)
                with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    low = m1(text, z)[0]
                    if stage == 2:
                        m2(low, text)

            fns = {"plain": plain, "fp32": lambda: fast(False)}
            if use_bf16:
                fns["bf16"] = lambda: fast(True)
            if bs in compile_batches:  # the batch of the targets: what the transposed convolutions gain

                def no_deconv():
                    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                        low = n1(text, z)[0]
                        if stage == 2:
                            n2(low, text)

                fns["no_deconv"] = no_deconv
            tm = timeit_interleaved(fns, device, repeats)
            t_plain, t_fast32 = tm["plain"]["best"], tm["fp32"]["best"]
            t_fast16 = tm["bf16"]["best"] if use_bf16 else None
            t_comp, compile_s, compile_error = None, None, None
            if bs in compile_batches:
                c1 = CompiledOrEager(o1)
                c2 = CompiledOrEager(o2) if o2 is not None else None

                def compiled():
                    with torch.inference_mode():
                        low = c1(text, z)[0]
                        if stage == 2:
                            c2(low, text)

                t0 = time.perf_counter()
                compiled()  # compiles
                compile_s = time.perf_counter() - t0
                compile_error = c1.failed or (c2.failed if c2 is not None else None)
                t_comp = None if compile_error else timeit_interleaved({"c": compiled}, device, repeats)["c"]["best"]
            best = min(t_fast32, t_fast16) if t_fast16 is not None else t_fast32
            best_key = "bf16" if t_fast16 is not None and t_fast16 < t_fast32 else "fp32"
            rows.append({"model": name, "stage": stage, "batch": bs, "gflop_per_image": flops / 1e9,
                         "executed_gflop_per_image": executed / 1e9,
                         "baseline_ms_per_image": 1e3 * t_plain / bs, "fp32_opt_ms_per_image": 1e3 * t_fast32 / bs,
                         "bf16_opt_ms_per_image": 1e3 * t_fast16 / bs if t_fast16 is not None else None,
                         "best_ms_per_image": 1e3 * best / bs, "best_precision": best_key,
                         "median_ms_per_image": {k: 1e3 * v["median"] / bs for k, v in tm.items()},
                         "no_deconv_ms_per_image": 1e3 * tm["no_deconv"]["best"] / bs if "no_deconv" in tm else None,
                         "speedup_vs_baseline": t_plain / best, "rss_mb": rss_mb(),
                         "compiled_ms_per_image": 1e3 * t_comp / bs if t_comp is not None else None,
                         "compile_s": compile_s, "compile_error": compile_error})
            set_floor(rows[-1], floor_rate)
            print(f"  {name:8s} stage {stage} batch {bs:2d}: baseline {rows[-1]['baseline_ms_per_image']:8.2f} ms/img, "
                  f"optimised {rows[-1]['best_ms_per_image']:8.2f} ms/img, x{rows[-1]['speedup_vs_baseline']:.2f}, "
                  f"{rows[-1]['ratio_to_floor']:.1f} x floor"
                  + (f", torch.compile {1e3 * t_comp / bs:.2f} ms/img (compiled in {compile_s:.0f} s)" if t_comp else "")
                  + (f", torch.compile failed: {compile_error}" if compile_error else ""), flush=True)
    return rows


def bench_training(name: str, m: dict, device: torch.device, batch: int, steps: int, stage: int) -> dict:
    torch.manual_seed(0)
    text_dim = m["text_dim"]
    if stage == 1:
        G = Stage1Generator(text_dim, m["z_dim"], m["cond_dim"], m["gf"], m["res1"]).to(device)
        D = Stage1Discriminator(text_dim, m["cond_dim"], m["df"], m["res1"], "mbstd").to(device)
        res = m["res1"]
        g1 = None
    else:
        g1 = Stage1Generator(text_dim, m["z_dim"], m["cond_dim"], m["gf"], m["res1"]).to(device).eval()
        G = Stage2Generator(text_dim, m["cond_dim"], m["gf"], m["res_blocks"], m["res1"], m["res2"]).to(device)
        D = Stage2Discriminator(text_dim, m["cond_dim"], m["df"], m["res2"], "mbstd").to(device)
        res = m["res2"]
    opt_g = torch.optim.Adam(G.parameters(), 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), 2e-4, betas=(0.5, 0.999))
    real = torch.rand(batch, 3, res, res, device=device) * 2 - 1
    text = torch.randn(batch, text_dim, device=device)
    group = 4 if batch % 4 == 0 else 1
    out = {}
    for label, bf16 in (("fp32", False), ("bf16", True)):
        if bf16 and not bf16_available(device):
            out[label] = None  # emulated bf16 is far slower than fp32; not measured
            continue

        def step():
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                z = torch.randn(batch, m["z_dim"], device=device)
                if stage == 1:
                    fake, mu, logvar = G(text, z)
                else:
                    with torch.no_grad():
                        low = g1(text, z)[0]
                    fake, mu, logvar = G(low, text)
                D.requires_grad_(True)
                ld = d_loss(D(text, real=real, fake=fake.detach(), wrong_text=text.roll(group, 0), group=group))
            opt_d.zero_grad(set_to_none=True)
            ld.backward()
            opt_d.step()
            D.requires_grad_(False)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                lg = g_loss(D(text, fake=fake, group=group)) + 2.0 * kl_loss(mu, logvar)
            opt_g.zero_grad(set_to_none=True)
            lg.backward()
            opt_g.step()

        sec = timeit(step, device, steps, warmup=1)
        out[label] = batch / sec
    row = {"config": name, "stage": stage, "batch": batch, "img_per_s_fp32": out["fp32"], "img_per_s_bf16": out["bf16"]}
    print(f"  train {name:7s} stage {stage} batch {batch:3d}: fp32 {out['fp32']:8.1f} img/s, bf16 {_fmt(out['bf16'])} img/s",
          flush=True)
    return row


def _fmt(v: float | None, spec: str = "8.1f") -> str:
    return "n/a (no native bf16)" if v is None else format(v, spec)


def bench_training_loop(device: torch.device, quick: bool) -> dict:
    """Images/s of the real training loop (`stackgan.training.train`: Accelerate, data loading,
    EMA, gradient norms, logging) on the shapes config's stage I, to set beside the bare step."""
    import logging
    import tempfile

    from stackgan.training.loop import train

    cfg, steps, window = training_loop_config(quick)
    logging.getLogger("stackgan").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        train(cfg, tmp)
        rows = [json.loads(line) for line in (Path(tmp) / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    # Each log row's rate covers the steps since the previous row; the first window (start-up,
    # first step) is left out, as the bare step leaves out its warm-up call.
    ips = statistics.median(r["img_per_s"] for r in rows[1:])
    print(f"  train loop shapes stage 1 batch {cfg.train.batch_size:3d}: fp32 {ips:8.1f} img/s "
          f"(stackgan.training.train, median of {len(rows) - 1} windows of {window} steps after the first)", flush=True)
    preset = "shapes-tiny.yaml" if quick else "shapes.yaml"
    return {"config": preset, "stage": 1, "batch": cfg.train.batch_size, "steps": steps, "window": window,
            "img_per_s_fp32": ips}


def training_loop_config(quick: bool):
    """The shapes preset (the tiny one with `quick`) cut down to the bare step's models: returns
    (config, steps, log window)."""
    from stackgan.config import load_config
    from stackgan.pipeline import DEFAULT_MODEL_DIR

    root = Path(__file__).resolve().parents[1]
    steps, window = (6, 2) if quick else (100, 20)
    preset = "shapes-tiny.yaml" if quick else "shapes.yaml"
    overrides = [f"text.model=local-dir:{DEFAULT_MODEL_DIR / 'text_encoder'}", "text.train_steps=0", "train.stages=[1]",
                 f"data.size={200 if quick else 2000}", "data.test_size=200", f"train.max_steps={steps}", f"train.log_every={window}",
                 "train.snapshot_every=100000", "train.checkpoint_every=100000", "model.d1_minibatch=mbstd",
                 # the same generator and discriminator as the bare step in bench_training
                 "model.g1_film=false", "model.d_norm=batch", "model.d_cond=concat", "train.loss=bce",
                 "train.clip_weight=0", "model.d_aux=[]", "train.aux_spread=0", "model.d1_upsample=1",
                 "train.mixed_precision=no"]
    if quick:
        overrides += ["model.z_dim=8", "model.cond_dim=8"]
    return load_config(root / "configs" / preset, overrides), steps, window


def bench_text(device: torch.device, n: int = 1024) -> dict:
    from stackgan.data.shapes import ShapesDataset

    pipe = StackGANPipeline.from_pretrained(device=device)
    ds = ShapesDataset(400, split="test", cache_dir="")
    caps = [c for i in range(len(ds)) for c in ds.captions(i)][:n]
    t0 = time.perf_counter()
    pipe.encode(caps)
    cold = len(caps) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    pipe.encode(caps)
    warm = len(caps) / (time.perf_counter() - t0)
    print(f"  text encoder: {cold:8.0f} captions/s without cache, {warm:10.0f} with the cache", flush=True)
    return {"captions": len(caps), "captions_per_s_uncached": cold, "captions_per_s_cached": warm}


def bench_bundled_call(device: torch.device) -> dict:
    """8 samples of one prompt through the bundled pipeline, plain, `optimize()`d and, where the hardware
    has bf16 units, with both stages in bf16 (`optimize(precision="bf16")`), taking turns."""
    pipes = {"plain": StackGANPipeline.from_pretrained(device=device),
             "fast": StackGANPipeline.from_pretrained(device=device).optimize()}
    if bf16_available(device):
        pipes["bf16"] = StackGANPipeline.from_pretrained(device=device).optimize(precision="bf16")

    def call(p):
        return lambda: p("a red circle on a white background", num_images_per_prompt=8, seed=0, output_type="pt")

    tm = timeit_interleaved({k: call(p) for k, p in pipes.items()}, device, 15, warmup=2)
    plain, fast = tm["plain"]["best"], tm["fast"]["best"]
    both = tm["bf16"]["best"] if "bf16" in tm else None
    print(f"  bundled pipeline, 8 samples of one prompt (cached caption): plain {plain * 1e3:.1f} ms, "
          f"optimised ({pipes['fast'].precision}) {fast * 1e3:.1f} ms"
          + (f", both stages in bf16 {both * 1e3:.1f} ms" if both is not None else "")
          + f" (best of 15; medians {tm['plain']['median'] * 1e3:.1f} and {tm['fast']['median'] * 1e3:.1f})", flush=True)
    return {"samples": 8, "plain_ms": plain * 1e3, "optimised_ms": fast * 1e3, "plain_median_ms": tm["plain"]["median"] * 1e3,
            "optimised_median_ms": tm["fast"]["median"] * 1e3, "precision": pipes["fast"].precision,
            "bf16_ms": None if both is None else both * 1e3,
            "bf16_median_ms": None if both is None else tm["bf16"]["median"] * 1e3, "rss_mb": rss_mb()}


def set_floor(row: dict, floor_rate: float) -> None:
    """The row's FLOP floor per image at `floor_rate` GFLOP/s, and its optimised time over it."""
    row["floor_ms_per_image"] = 1e3 * row["gflop_per_image"] / floor_rate
    row["ratio_to_floor"] = row["best_ms_per_image"] / row["floor_ms_per_image"]
    if "executed_gflop_per_image" in row:  # the floor of the FLOPs the optimised path really does
        row["ratio_to_executed_floor"] = row["best_ms_per_image"] / (1e3 * row["executed_gflop_per_image"] / floor_rate)


def _ms(v: float) -> str:
    """Milliseconds with two decimals, or three significant digits below 0.1 ms (GPU floors)."""
    return f"{v:.2f}" if v >= 0.1 else f"{v:.3g}"


def _floor_rate(rates: dict, device: torch.device) -> float:
    return max(rates["fp32"], rates["bf16"]) if bf16_available(device) else rates["fp32"]


SENSITIVITY_NUDGES = (1e-3, 3e-3)  # relative changes of the noise inputs for the float32 sensitivity reference


REDUCED_PRECISIONS = ("bf16-stage2", "bf16")  # the first is what `optimize()` serves where the hardware has bf16 units


def bench_precision(device: torch.device, num_prompts: int, k: int) -> dict:
    """The optimised reduced-precision paths (`optimize(precision=...)`: stage II alone in bf16, as
    `optimize()` serves it on bf16 hardware, and both stages in bf16) against the plain float32 one on
    the bundled model: the same prompts, seeds and noise, compared pixel by pixel (uint8) and through
    the shapes probe (same attributes read?). The top-level figures are those of the served path.
    Without native bf16 units the bf16 arithmetic is emulated: slow, but the same rounding."""
    from stackgan.metrics.probe import load_probe
    from stackgan.metrics.shapes_bench import load_prompt_set

    prompts = [p["prompt"] for p in load_prompt_set(num_prompts=num_prompts)["prompts"]]
    images, seconds, pipes = {}, {}, {}
    for precision in ("fp32",) + REDUCED_PRECISIONS:
        # float32: the saved generators as they are; the others: the optimised copies at that precision
        pipe = pipes[precision] = StackGANPipeline.from_pretrained(device=device)
        if precision != "fp32":
            pipe.optimize(precision=precision)
        t0 = time.perf_counter()
        images[precision] = pipe(prompts, num_images_per_prompt=k, seed=0, output_type="pt").images
        seconds[precision] = time.perf_counter() - t0
    # The model's own sensitivity, for scale: float32 again, with every noise input (z and both conditioning
    # noises) multiplied by 1 + 1e-3 and 1 + 3e-3. Samples near the probe's decision boundaries change reading
    # under any perturbation; how many do so under these tiny ones is the floor any reduced precision meets.
    for nudge in SENSITIVITY_NUDGES:
        images[f"fp32_x{1 + nudge:g}"] = pipes["fp32"](prompts, num_images_per_prompt=k, seed=0, output_type="pt",
                                                    noise_scale=1 + nudge).images  # fmt: skip
    probe, _ = load_probe()
    probe = probe.to(device)
    reads = {key: probe.predict(im.to(device)) for key, im in images.items()}

    def compare(key: str) -> dict:
        pa, pb = reads["fp32"], reads[key]
        diff = (images["fp32"].int() - images[key].int()).abs().float()
        return {"mean_abs_diff_uint8": diff.mean().item(), "max_abs_diff_uint8": diff.max().item(),
                "p99_abs_diff_uint8": diff.flatten().quantile(0.99).item() if diff.numel() <= 16_000_000 else None,
                "probe_same_all_attributes": torch.stack([pa[n] == pb[n] for n in pa]).all(0).float().mean().item(),
                "probe_same_per_attribute": {n: (pa[n] == pb[n]).float().mean().item() for n in pa}}

    paths = {precision: compare(precision) | {"seconds": seconds[precision]} for precision in REDUCED_PRECISIONS}
    sensitivity = []
    for nudge in SENSITIVITY_NUDGES:
        c = compare(f"fp32_x{1 + nudge:g}")
        sensitivity.append({"noise_scale": 1 + nudge, "probe_same_all_attributes": c["probe_same_all_attributes"],
                            "mean_abs_diff_uint8": c["mean_abs_diff_uint8"]})
    served = REDUCED_PRECISIONS[0]
    r = {"samples": images["fp32"].shape[0], "prompts": len(prompts), "per_prompt": k,
         "emulated_bf16": not bf16_available(device), "served": served, **paths[served], "paths": paths,
         "fp32_sensitivity": sensitivity, "fp32_s": seconds["fp32"]}
    for precision, c in paths.items():
        print(f"  {precision} vs fp32, bundled model, {r['samples']} samples ({len(prompts)} prompts x {k}"
              f"{', bf16 emulated' if r['emulated_bf16'] else ''}): mean |diff| {c['mean_abs_diff_uint8']:.3f}/255, "
              f"max {c['max_abs_diff_uint8']:.0f}/255; the probe reads the same 5 attributes for "
              f"{100 * c['probe_same_all_attributes']:.1f} % of samples", flush=True)
    for row in sensitivity:
        print(f"  for scale: float32 with the noise x {row['noise_scale']:g}: mean |diff| {row['mean_abs_diff_uint8']:.3f}/255, "
              f"the probe reads the same 5 attributes for {100 * row['probe_same_all_attributes']:.1f} %", flush=True)
    return r


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--quick", action="store_true", help="tiny sizes, for tests")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile column (it compiles for tens of seconds)")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA device is visible")
        return 2
    device = torch.device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    result: dict = {"machine": machine(device)}
    print("machine:", json.dumps(result["machine"]), flush=True)

    n = 512 if args.quick else (2048 if device.type == "cpu" else 8192)
    # Without native bf16 units the matmul is emulated (single-threaded, ~1 GFLOP/s here): a
    # smaller size shows that in seconds instead of minutes.
    n_bf16 = n if bf16_available(device) else min(n, 512)
    rounds = 1 if args.quick else 3
    rates = matmul_rates(device, n, n_bf16, rounds)
    floor_rate = _floor_rate(rates, device)
    result["matmul_gflops"] = {**rates, "n": n, "n_bf16": n_bf16}
    result["floor_rate_gflops"] = floor_rate
    print(f"matmul {n}x{n}: fp32 {rates['fp32']:.1f} GFLOP/s; {n_bf16}x{n_bf16}: bf16 {rates['bf16']:.1f} GFLOP/s "
          f"(best of {rounds}; floor uses {floor_rate:.0f} until the re-measurement after generation)", flush=True)
    write_json(out / "bench.json", result)

    bundled = StackGANPipeline.from_pretrained()
    paper = PAPER if not args.quick else {**PAPER, "gf": 8, "df": 8, "res2": 128, "res_blocks": 1}
    torch.manual_seed(0)
    pg1 = Stage1Generator(paper["text_dim"], paper["z_dim"], paper["cond_dim"], paper["gf"], paper["res1"])
    pg2 = Stage2Generator(paper["text_dim"], paper["cond_dim"], paper["gf"], paper["res_blocks"], paper["res1"], paper["res2"])
    batches = [1, 8] if args.quick else [1, 8, 32]
    reps = 2 if args.quick else 5
    print("generation (ms per image):", flush=True)
    # the batch of the targets; compiling costs tens of seconds per shape
    compile_at = () if (args.quick or args.no_compile) else (8,)
    rows = bench_generation("bundled", bundled.stage1, bundled.stage2, bundled.text_encoder.dim, device, batches,
                            floor_rate, reps, compile_at)
    rows += bench_generation("paper", pg1, pg2, paper["text_dim"], device, batches, floor_rate, 5 if not args.quick else 1,
                             compile_at)
    # The matmul rate again, after the generation timings: the floor uses the best of all
    # measurements, so a noisy first measurement cannot flatter the "x floor" column.
    again = matmul_rates(device, n, n_bf16, rounds)
    for k in ("fp32", "bf16"):
        rates[k] = max(rates[k], again[k])
        rates[f"{k}_all"] += again[f"{k}_all"]
    floor_rate = _floor_rate(rates, device)
    result["matmul_gflops"] = {**rates, "n": n, "n_bf16": n_bf16}
    result["floor_rate_gflops"] = floor_rate
    for r in rows:
        set_floor(r, floor_rate)
    print(f"matmul again: fp32 {again['fp32']:.1f}, bf16 {again['bf16']:.1f} GFLOP/s; the floor uses the best of all "
          f"{len(rates['fp32_all'])} rounds: {floor_rate:.1f} GFLOP/s", flush=True)
    result["generation"] = rows
    write_json(out / "bench.json", result)
    result["bundled_call"] = bench_bundled_call(device)
    write_json(out / "bench.json", result)

    print("training throughput:", flush=True)
    cfg = bundled.info.get("config", {}).get("model", {})
    shapes_m = {"z_dim": cfg.get("z_dim", 64), "cond_dim": cfg.get("cond_dim", 64), "gf": cfg.get("gf", 32),
                "df": cfg.get("df", 32), "res_blocks": cfg.get("res_blocks", 2), "res1": cfg.get("res1", 32),
                "res2": cfg.get("res2", 64), "text_dim": bundled.text_encoder.dim}
    steps = 2 if args.quick else 5
    result["training"] = [
        # the row the training loop is compared with: more steps, as its rate varies from step to step here
        bench_training("shapes", shapes_m, device, 64 if not args.quick else 8, 4 * steps, 1),
        bench_training("shapes", shapes_m, device, 64 if not args.quick else 8, steps, 2),
        bench_training("paper", paper, device, 8 if not args.quick else 4, steps, 1),
    ]
    if not args.quick:
        result["training"].append(bench_training("paper", paper, device, 4, 2, 2))
    write_json(out / "bench.json", result)
    result["training_loop"] = bench_training_loop(device, args.quick)
    write_json(out / "bench.json", result)
    result["text"] = bench_text(device, 128 if args.quick else 1024)
    write_json(out / "bench.json", result)
    print("reduced precision:", flush=True)
    # 1,536 samples: on 512 the count of samples read differently moved by half a point from one seed to another
    result["precision"] = bench_precision(device, 2 if args.quick else 192, 2 if args.quick else 8)
    result["wall_s"] = time.time() - t_start
    write_json(out / "bench.json", result)
    (out / "bench.md").write_text(to_markdown(result), encoding="utf-8")
    print(to_markdown(result))
    print(f"wrote {out / 'bench.json'} in {result['wall_s']:.0f} s")
    return 0


def to_markdown(r: dict) -> str:
    m = r["machine"]
    lines = [f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}, {m['threads']} threads, device {m['device']}"
             + (f" ({m['gpu']})" if "gpu" in m else "") + f", native bf16: {m['native_bf16']}.",
             f"Dense matmul: fp32 {r['matmul_gflops']['fp32']:.1f} GFLOP/s ({r['matmul_gflops']['n']}^2), "
             f"bf16 {r['matmul_gflops']['bf16']:.1f} GFLOP/s ({r['matmul_gflops'].get('n_bf16', r['matmul_gflops']['n'])}^2)"
             + (f", best of {len(r['matmul_gflops']['fp32_all'])} rounds before and after the generation timings "
                f"(fp32 rounds: {', '.join(f'{v:.0f}' for v in r['matmul_gflops']['fp32_all'])})"
                if "fp32_all" in r["matmul_gflops"] else "")
             + f"; the floor uses {r['floor_rate_gflops']:.1f}.", "",
             "| model | stage | batch | GFLOP/img | floor ms/img | baseline ms/img | optimised ms/img | speed-up | optimised / floor "
             "| executed GFLOP/img | optimised / its floor | + torch.compile ms/img |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for g in r["generation"]:
        floor_ms = g["gflop_per_image"] / r["floor_rate_gflops"] * 1e3
        comp = g.get("compiled_ms_per_image")
        comp = (f"{comp:.2f} (compile {g['compile_s']:.0f} s)" if comp is not None
                else "failed" if g.get("compile_error") else "")
        lines.append(f"| {g['model']} | {g['stage']} | {g['batch']} | {g['gflop_per_image']:.2f} | {_ms(floor_ms)} "
                     f"| {_ms(g['baseline_ms_per_image'])} | {_ms(g['best_ms_per_image'])} | {g['speedup_vs_baseline']:.2f} "
                     f"| {g['ratio_to_floor']:.2f} | {g['executed_gflop_per_image']:.2f} | {g['ratio_to_executed_floor']:.2f} | {comp} |")
    no_deconv = [f"- {g['model']} stage {g['stage']} batch {g['batch']}: {_ms(g['no_deconv_ms_per_image'])} ms/img "
                 f"against {_ms(g['best_ms_per_image'])}" for g in r["generation"] if g.get("no_deconv_ms_per_image")]
    if no_deconv:
        lines += ["", "Without the transposed convolutions (nearest upsampling + 3x3 convolution, the rest of the "
                  "optimised path the same, in the same rounds):", *no_deconv]
    b = r["bundled_call"]
    lines += ["", f"Bundled pipeline, 8 samples: {b['plain_ms']:.1f} ms plain, {b['optimised_ms']:.1f} ms optimised "
              f"({b['precision']})" + (f", {b['bf16_ms']:.1f} ms with both stages in bf16" if b.get("bf16_ms") else "")
              + f"; process RSS {b['rss_mb']:.0f} MB.", "",
              "| training | stage | batch | fp32 img/s | bf16 img/s |", "|---|---|---|---|---|"]
    for t in r["training"]:
        lines.append(f"| {t['config']} (bare step) | {t['stage']} | {t['batch']} | {t['img_per_s_fp32']:.1f} "
                     f"| {_fmt(t['img_per_s_bf16'], '.1f')} |")
    if "training_loop" in r:
        t = r["training_loop"]
        lines.append(f"| {t['config']} (`stackgan.training.train`, steps {t.get('window', 0) + 1}-{t['steps']}) | {t['stage']} | {t['batch']} "
                     f"| {t['img_per_s_fp32']:.1f} | |")
    t = r["text"]
    lines += ["", f"Text encoder: {t['captions_per_s_uncached']:.0f} captions/s uncached, "
              f"{t['captions_per_s_cached']:.0f} with the cache ({t['captions']} captions)."]
    if "precision" in r:
        q = r["precision"]
        paths = q.get("paths") or {"bf16": q}
        lines += ["", f"Reduced precision against plain float32, bundled model, {q['samples']} samples ({q['prompts']} prompts "
                  f"of the shapes benchmark x {q['per_prompt']}, seed 0{'; bf16 emulated on this CPU' if q['emulated_bf16'] else ''}):", "",
                  "| path | mean abs. difference (uint8) | max | probe reads the same 5 attributes | "
                  + " | ".join(q["probe_same_per_attribute"]) + " |", "|---|---:|---:|---:|" + "---:|" * len(q["probe_same_per_attribute"])]
        for name, c in paths.items():
            label = f"{name} (what `optimize()` serves)" if name == q.get("served") else name
            lines.append(f"| {label} | {c['mean_abs_diff_uint8']:.3f}/255 | {c['max_abs_diff_uint8']:.0f} | "
                         f"{100 * c['probe_same_all_attributes']:.1f} % | "
                         + " | ".join(f"{100 * v:.1f} %" for v in c["probe_same_per_attribute"].values()) + " |")
        if q.get("fp32_sensitivity"):
            lines += ["", "For scale, the model's own sensitivity: float32 again with every noise input scaled by "
                      + "; ".join(f"{row['noise_scale']:g}: mean |difference| {row['mean_abs_diff_uint8']:.3f}/255, same five "
                                  f"attributes for {100 * row['probe_same_all_attributes']:.1f} %" for row in q["fp32_sensitivity"])
                      + " of the samples."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
