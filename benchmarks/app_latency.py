"""Web UI latency: request to images, on the server and in a real browser; and the UI screenshot.

    python -m benchmarks.app_latency [--model PATH] [--runs 7] [--browser-runs 3] [--out DIR]
    python -m benchmarks.app_latency [--model PATH] --screenshot docs/ui.png     # only the screenshot

Measured for one caption and `--samples` (8) images at stage II, each run with a new seed:
  pipeline     `pipe([caption], 8, seed)`: text encoding (cached after the first run) + stage I + stage II
  server       `app.logic.generate(...)`: the Generate callback (validation + pipeline + diversity score)
  browser      headless chromium (Debian's /usr/bin/chromium through playwright): from the click on
               Generate until all images are in the gallery and decoded (queue, HTTP, PNG encoding included)
Each row is the median of its runs after one warm-up run. `--out DIR` writes DIR/app_latency.json.
`--model` defaults to the bundled model (stackgan/assets/default); the command fails with a clear
message when it is missing. The model is served as `python -m app` serves it: `--precision`
(auto) and `--candidates` (the model's own sampling, else 4) as there.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import socket
import statistics
import sys
import time
from pathlib import Path

import stackgan  # noqa: F401  (offline settings before gradio is imported)
from benchmarks import write_json
from benchmarks.load_test import memory

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1280, "height": 900}
GALLERY_IMAGES = "#gallery .grid-container img"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def summarize(times: list[float]) -> dict:
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "runs": len(times),
            "all_s": [round(t, 4) for t in times]}


# ---------------------------------------------------------------------------- server side
def time_server(pipe, caption: str, samples: int, runs: int) -> dict[str, dict]:
    """Median time of the bare pipeline call and of the Generate callback, each after a warm-up."""
    from app import logic

    pipe([caption], num_images_per_prompt=samples, seed=10_000, output_type="pt")  # warm-up
    t_pipe = []
    for k in range(runs):
        t0 = time.perf_counter()
        pipe([caption], num_images_per_prompt=samples, seed=k, output_type="pt")
        t_pipe.append(time.perf_counter() - t0)
    logic.generate(pipe, caption, samples, 10_001, logic.STAGE_2)  # warm-up
    t_logic = []
    for k in range(runs):
        t0 = time.perf_counter()
        r = logic.generate(pipe, caption, samples, 100 + k, logic.STAGE_2)
        t_logic.append(time.perf_counter() - t0)
        if r.error or len(r.images) != samples:
            raise RuntimeError(f"generate failed: {r.error or len(r.images)}")
    return {"pipeline": summarize(t_pipe), "server": summarize(t_logic)}


# ---------------------------------------------------------------------------- browser
class BrowserSession:
    """The app served on a free local port and one headless chromium page on it."""

    def __init__(self, pipe):
        from playwright.sync_api import sync_playwright

        from app.ui import build_demo, launch

        if not Path(CHROMIUM).exists():
            raise RuntimeError(f"{CHROMIUM} is missing: apt-get install chromium (never `playwright install`)")
        self.demo = build_demo(pipe)
        _, self.url, _ = launch(self.demo, host="127.0.0.1", port=free_port(), prevent_thread_lock=True, quiet=True)
        self._pw = sync_playwright().start()
        self.browser = self._pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        self.page = self.browser.new_page(viewport=VIEWPORT)
        self.page.goto(self.url)
        self.page.wait_for_selector("#prompt textarea")

    def set_inputs(self, caption: str, samples: int, seed: int) -> None:
        page = self.page
        page.fill("#prompt textarea", caption)
        count = page.locator("#samples input[type=number]")
        count.fill(str(samples))
        count.press("Enter")
        page.fill("#seed input", str(seed))
        page.press("#seed input", "Tab")

    def generate(self, samples: int, timeout_s: float = 120) -> float:
        """Click Generate; seconds until `samples` new images are in the gallery and decoded."""
        page = self.page
        old = page.eval_on_selector_all(GALLERY_IMAGES, "els => els.map(e => e.src)")
        t0 = time.perf_counter()
        page.click("#generate")
        page.wait_for_function(
            """([sel, old, n]) => {
                const imgs = [...document.querySelectorAll(sel)];
                return imgs.length === n && imgs.every(i => i.complete && i.naturalWidth > 0 && !old.includes(i.src));
            }""",
            arg=[GALLERY_IMAGES, old, samples], timeout=timeout_s * 1000, polling="raf")
        return time.perf_counter() - t0

    def close(self) -> None:
        try:
            self.browser.close()
            self._pw.stop()
        finally:
            self.demo.close()


def time_browser(session: BrowserSession, caption: str, samples: int, runs: int) -> dict:
    session.set_inputs(caption, samples, 20_000)
    session.generate(samples)  # warm-up
    times = []
    for k in range(runs):
        session.set_inputs(caption, samples, 200 + k)  # a new seed: new images, new gallery
        times.append(session.generate(samples))
    return {**summarize(times), "chromium": session.browser.version}


def screenshot(session: BrowserSession, path: Path, caption: str, samples: int = 8, seed: int = 0) -> Path:
    """The page after generating `samples` images of `caption` at 1280x900, saved as PNG."""
    session.set_inputs(caption, samples, seed)
    session.generate(samples)
    session.page.mouse.move(0, 0)  # no hover or focus styles in the picture
    session.page.evaluate("document.activeElement && document.activeElement.blur()")
    session.page.wait_for_timeout(600)  # let the diversity number and the layout settle
    path.parent.mkdir(parents=True, exist_ok=True)
    session.page.screenshot(path=str(path))
    return path


# ---------------------------------------------------------------------------- main
def load(model: str | None, precision: str = "auto", candidates: int | None = None):
    """The model as `python -m app` serves it with these settings (app.main.load_pipeline)."""
    from app.main import load_pipeline

    try:
        return load_pipeline(model, "main", precision, candidates)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None


def print_table(result: dict) -> None:
    n = result["samples"]
    rows = [("pipeline call", "pipeline"), ("server: Generate callback", "server"), ("browser: click -> images shown", "browser")]
    print(f"\nmodel {result['model_id']} ({result['resolution']} px, {result['precision']}, "
          f"{result['candidates']} candidates per sample), {n} samples, "
          f"{result['torch_threads']} torch threads on {result['cpu_count']} CPUs")
    print(f"| {'what':32} | median s | min s | max s | runs |")
    print(f"|{'-' * 34}|---------:|------:|------:|-----:|")
    for label, key in rows:
        r = result.get(key)
        if r:
            print(f"| {label:32} | {r['median_s']:8.3f} | {r['min_s']:5.3f} | {r['max_s']:5.3f} | {r['runs']:4d} |")
    mem = result.get("memory_mib")
    if mem:
        end = mem["after_requests"]
        print(f"app process resident memory: {mem['after_load'].get('rss_mib', float('nan')):.0f} MiB after loading, "
              f"{end.get('rss_mib', float('nan')):.0f} MiB after the requests (peak {end.get('peak_rss_mib', float('nan')):.0f} MiB)")


def main(argv: list[str] | None = None) -> int:
    from stackgan.pipeline import PRECISIONS

    p = argparse.ArgumentParser(prog="python -m benchmarks.app_latency", description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="pipeline folder (default: the bundled model)")
    p.add_argument("--caption", default=None, help="caption (default: the model's first example prompt)")
    p.add_argument("--samples", type=int, default=8, help="images per request (default 8)")
    p.add_argument("--runs", type=int, default=7, help="server-side runs (median)")
    p.add_argument("--browser-runs", type=int, default=3, help="browser runs (median); 0 skips the browser")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--precision", default="auto", choices=PRECISIONS, help="as python -m app (default auto)")
    p.add_argument("--candidates", type=int, default=None,
                   help="as python -m app (default: the model's own sampling, else 4)")
    p.add_argument("--out", default=None, help="folder for app_latency.json")
    p.add_argument("--screenshot", default=None, metavar="PATH",
                   help="save a 1280x900 screenshot after generating 8 images; without --out, only that")
    args = p.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = load(args.model, args.precision, args.candidates)
    from app import logic

    after_load = memory(os.getpid())

    caption = args.caption or logic.example_prompts(pipe)[0]
    if args.screenshot and not args.out:
        session = BrowserSession(pipe)
        try:
            print(f"wrote {screenshot(session, Path(args.screenshot), caption)}")
        finally:
            session.close()
        return 0

    import gradio

    result = {
        "benchmark": "app_latency", "model_id": pipe.model_id, "model_source": pipe.source, "resolution": pipe.resolution,
        "caption": caption, "samples": args.samples, "stage": 2, "device": str(pipe.device),
        "precision": pipe.precision, "candidates": pipe.candidates, "diversity": pipe.diversity,
        "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
        "torch": torch.__version__, "gradio": gradio.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    result.update(time_server(pipe, caption, args.samples, args.runs))
    if args.browser_runs > 0 or args.screenshot:
        session = BrowserSession(pipe)
        try:
            if args.browser_runs > 0:
                result["browser"] = time_browser(session, caption, args.samples, args.browser_runs)
            if args.screenshot:
                result["screenshot"] = str(screenshot(session, Path(args.screenshot), caption))
        finally:
            session.close()
    # this process is the app's server (the browser runs in processes of its own)
    result["memory_mib"] = {"after_load": after_load, "after_requests": memory(os.getpid())}
    print_table(result)
    if args.out:
        print(f"\nwrote {write_json(Path(args.out) / 'app_latency.json', result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
