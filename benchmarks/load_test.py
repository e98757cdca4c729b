"""Load test of the web UI: concurrent gradio_client users against one server, and its memory.

    python -m benchmarks.load_test [--model PATH] [--clients 20] [--requests 5] [--samples 8] [--out DIR]

The server is the real app (`app.ui.build_demo` + `app.ui.launch` on 127.0.0.1, a free port) in a
child process, so that its resident memory is its own and the clients do not share its GIL.
`--clients` threads each open a `gradio_client.Client` and send `--requests` requests to
`/generate` (one caption, `--samples` images at stage II, a new seed each), one after another.

The app's queue holds at most 16 waiting requests (`demo.queue(max_size=16)`) and runs one at a
time; a request beyond that is refused at once (HTTP 503, `gradio_client` raises QueueError
"Queue is full! Please try again." and does not retry by itself). These clients retry a refused
request after a back-off (`--retries`, default 20; 0 = report refusals as failures), the way a
user clicks Generate again. Recorded per request: end-to-end latency (first try to images,
retries and queue wait included), refusals, errors. Resident memory (psutil, else
/proc/PID/status VmRSS; VmHWM for the peak) of the server: after start-up and a warm-up request,
and after the load. `--out DIR` writes DIR/load_test.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import stackgan  # noqa: F401  (offline settings before gradio is imported)
from benchmarks import write_json

READY = "LOAD_TEST_SERVER_READY "
QUEUE_FULL = "Queue is full"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------- the server (child process)
def serve(model: str | None, port: int, threads: int | None) -> int:
    """Load the model, start the app on 127.0.0.1:port, print READY + JSON, serve until stdin closes."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    from app import logic
    from app.main import load_pipeline
    from app.ui import build_demo, launch

    try:
        pipe = load_pipeline(model, "main")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    demo = build_demo(pipe)
    _, url, _ = launch(demo, host="127.0.0.1", port=port, prevent_thread_lock=True, quiet=True)
    info = {"url": url, "pid": os.getpid(), "model_id": pipe.model_id, "model_source": pipe.source,
            "resolution": pipe.resolution, "torch_threads": torch.get_num_threads(),
            "max_size": demo._queue.max_size if getattr(demo, "_queue", None) is not None else None,
            "caption": logic.example_prompts(pipe)[0]}
    print(READY + json.dumps(info), flush=True)
    sys.stdin.read()  # the parent closes stdin to stop the server
    demo.close()
    return 0


def memory(pid: int) -> dict[str, float]:
    """Resident memory of `pid` in MiB: rss now and the peak so far (hwm, Linux only)."""
    out: dict[str, float] = {}
    try:
        import psutil

        out["rss_mib"] = psutil.Process(pid).memory_info().rss / 2**20
        out["source"] = "psutil"
    except ImportError:
        pass
    status = Path(f"/proc/{pid}/status")
    if status.exists():
        for line in status.read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[{"VmRSS": "rss_mib", "VmHWM": "peak_rss_mib"}[key]] = int(value.split()[0]) / 1024
        out.setdefault("source", "/proc/PID/status")
    return out


class Server:
    """The app in a child process (`python -m benchmarks.load_test --serve`)."""

    def __init__(self, model: str | None, threads: int | None, timeout_s: float = 300):
        cmd = [sys.executable, "-m", "benchmarks.load_test", "--serve", "--port", str(free_port())]
        cmd += ["--model", model] if model else []
        cmd += ["--threads", str(threads)] if threads else []
        env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1",
                   NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
        root = Path(__file__).resolve().parents[1]
        self.proc = subprocess.Popen(cmd, cwd=root, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        deadline = time.monotonic() + timeout_s
        for line in self.proc.stdout:  # type: ignore[union-attr]
            if line.startswith(READY):
                self.info = json.loads(line[len(READY):])
                break
            if time.monotonic() > deadline:
                break
        else:
            raise SystemExit(f"error: the server did not start (exit code {self.proc.wait()})")
        self.url, self.pid = self.info["url"], self.proc.pid
        # Drain the child's stdout so it never blocks on a full pipe.
        threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()  # type: ignore[union-attr]

    def close(self) -> None:
        try:
            self.proc.stdin.close()  # type: ignore[union-attr]
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            self.proc.wait(timeout=30)


# ---------------------------------------------------------------------------- the clients
def one_client(url: str, k: int, args, results: list, start: threading.Barrier, folder: str) -> None:
    from gradio_client import Client

    from app import logic

    client = Client(url, analytics_enabled=False, verbose=False, download_files=os.path.join(folder, f"c{k}"))
    start.wait()
    rng = random.Random(k)
    for j in range(args.requests):
        seed = 1000 * k + j
        rec = {"client": k, "request": j, "seed": seed, "refused": 0, "ok": False, "error": None}
        t0 = time.perf_counter()
        while True:
            t_try = time.perf_counter()
            try:
                gallery, *_ = client.predict(args.caption, args.samples, seed, logic.STAGE_2, api_name="/generate")
            except Exception as e:  # noqa: BLE001  (every failure is recorded, none ends the run)
                if QUEUE_FULL in str(e) and rec["refused"] < args.retries:
                    rec["refused"] += 1
                    # Exponential back-off with jitter, like a patient user (0.25 s, 0.5 s, ... at most 4 s).
                    time.sleep(min(4.0, 0.25 * 2 ** (rec["refused"] - 1)) * (0.5 + rng.random()))
                    continue
                rec["refused"] += QUEUE_FULL in str(e)
                rec["error"] = f"{type(e).__name__}: {str(e)[:200]}"
                break
            rec["ok"] = len(gallery) == args.samples
            if not rec["ok"]:
                rec["error"] = f"{len(gallery)} images instead of {args.samples}"
            rec["last_try_s"] = time.perf_counter() - t_try
            break
        rec["latency_s"] = time.perf_counter() - t0
        results.append(rec)
    client.close()


def percentile(values: list[float], q: float) -> float:
    """q-th percentile, linear interpolation between closest ranks (numpy's default)."""
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo, hi = int(pos), min(int(pos) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def latency_stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"p50_s": percentile(values, 50), "p95_s": percentile(values, 95), "max_s": max(values),
            "min_s": min(values), "mean_s": statistics.fmean(values)}


def run(args) -> dict:
    import gradio
    import gradio_client
    import torch

    from app import logic

    server = Server(args.model, args.threads)
    try:
        caption = args.caption = args.caption or server.info["caption"]
        with tempfile.TemporaryDirectory() as folder:
            from gradio_client import Client

            warm = Client(server.url, analytics_enabled=False, verbose=False, download_files=os.path.join(folder, "warm"))
            t0 = time.perf_counter()
            warm.predict(caption, args.samples, 0, logic.STAGE_2, api_name="/generate")  # warm-up (not counted)
            warm_s = time.perf_counter() - t0
            warm.close()
            mem_before = memory(server.pid)

            results: list[dict] = []
            barrier = threading.Barrier(args.clients)
            rss_series: list[tuple[float, int, float]] = []  # (seconds, requests done, RSS MiB) every 0.5 s
            done = threading.Event()

            def sample_memory():
                while not done.wait(0.5):
                    rss_series.append((round(time.perf_counter() - t_start, 2), len(results),
                                       round(memory(server.pid).get("rss_mib", 0.0), 1)))

            threads = [threading.Thread(target=one_client, args=(server.url, k, args, results, barrier, folder))
                       for k in range(args.clients)]
            t_start = time.perf_counter()
            sampler = threading.Thread(target=sample_memory, daemon=True)
            sampler.start()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - t_start
            done.set()
            sampler.join()
            mem_after = memory(server.pid)
    finally:
        server.close()

    ok = [r for r in results if r["ok"]]
    total = args.clients * args.requests
    return {
        "benchmark": "load_test", "model_id": server.info["model_id"], "model_source": server.info["model_source"],
        "resolution": server.info["resolution"], "caption": args.caption, "samples": args.samples, "stage": 2,
        "clients": args.clients, "requests_per_client": args.requests, "requests": total, "retries_allowed": args.retries,
        "queue_max_size": server.info["max_size"], "server_torch_threads": server.info["torch_threads"],
        "cpu_count": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
        "gradio": gradio.__version__, "gradio_client": gradio_client.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "warmup_request_s": warm_s,
        "succeeded": len(ok), "failed": total - len(ok), "all_succeeded": len(ok) == total,
        "queue_refusals": sum(r["refused"] for r in results),
        "requests_refused_at_least_once": sum(r["refused"] > 0 for r in results),
        "latency": latency_stats([r["latency_s"] for r in ok]),
        "last_try_latency": latency_stats([r["last_try_s"] for r in ok]),
        "wall_s": wall, "requests_per_s": len(ok) / wall, "images_per_s": len(ok) * args.samples / wall,
        "memory_before_load": mem_before, "memory_after_load": mem_after,
        "max_rss_sampled_mib": max([m for _, _, m in rss_series] + [mem_after.get("rss_mib", 0.0)]),
        "rss_series": rss_series,
        "errors": sorted({r["error"] for r in results if r["error"]})[:10],
        "per_request": sorted(results, key=lambda r: (r["client"], r["request"])),
    }


def print_table(r: dict) -> None:
    print(f"\nmodel {r['model_id']} ({r['resolution']} px), {r['clients']} clients x {r['requests_per_client']} requests, "
          f"{r['samples']} samples each; queue max_size {r['queue_max_size']}, retries allowed {r['retries_allowed']}; "
          f"server on {r['server_torch_threads']} torch threads, {r['cpu_count']} CPUs")
    print("| what | value |")
    print("|---|---:|")
    rows = [("requests succeeded", f"{r['succeeded']} / {r['requests']}"),
            ("queue refusals (HTTP 503, retried)" if r["retries_allowed"] else "queue refusals (HTTP 503, not retried)",
             f"{r['queue_refusals']} (on {r['requests_refused_at_least_once']} requests)")]
    if r["latency"]:
        lat = r["latency"]
        rows += [("latency p50 / p95 / max, s (queue + retries)", f"{lat['p50_s']:.2f} / {lat['p95_s']:.2f} / {lat['max_s']:.2f}")]
        one = r["last_try_latency"]
        rows += [("last try p50 / p95 / max, s", f"{one['p50_s']:.2f} / {one['p95_s']:.2f} / {one['max_s']:.2f}")]
    rows += [("wall time, s", f"{r['wall_s']:.1f}"), ("throughput, requests/s (images/s)",
                                                     f"{r['requests_per_s']:.2f} ({r['images_per_s']:.1f})")]
    mb, ma = r["memory_before_load"], r["memory_after_load"]
    rows += [("server RSS before / after load, MiB", f"{mb.get('rss_mib', float('nan')):.0f} / {ma.get('rss_mib', float('nan')):.0f}"),
             ("server peak RSS (VmHWM), MiB", f"{ma.get('peak_rss_mib', float('nan')):.0f}")]
    for label, value in rows:
        print(f"| {label} | {value} |")
    for e in r["errors"]:
        print(f"error: {e}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.load_test", description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="pipeline folder (default: the bundled model)")
    p.add_argument("--clients", type=int, default=20, help="concurrent clients (default 20)")
    p.add_argument("--requests", type=int, default=5, help="requests per client, one after another (default 5)")
    p.add_argument("--samples", type=int, default=8, help="images per request (default 8)")
    p.add_argument("--caption", default=None, help="caption (default: the model's first example prompt)")
    p.add_argument("--retries", type=int, default=20, help="retries of a request refused by a full queue (0: none)")
    p.add_argument("--threads", type=int, default=None, help="server torch threads (default: torch's choice)")
    p.add_argument("--out", default=None, help="folder for load_test.json")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        return serve(args.model, args.port or free_port(), args.threads)
    if min(args.clients, args.requests, args.samples) < 1 or args.retries < 0:
        p.error("--clients, --requests and --samples must be >= 1, --retries >= 0")
    result = run(args)
    print_table(result)
    if args.out:
        print(f"\nwrote {write_json(Path(args.out) / 'load_test.json', result)}")
    return 0 if result["all_succeeded"] else 1


if __name__ == "__main__":
    sys.exit(main())
