"""The app once in a real browser (playwright + Debian's chromium): caption, 4 samples, Generate, 4 images."""

from __future__ import annotations

import socket
from pathlib import Path
from urllib.parse import urlparse

import pytest
from conftest import make_tiny_pipeline

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason=f"no browser: {CHROMIUM} is missing (apt-get install chromium; CI installs it)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_generate_in_browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (never `playwright install`)")
    from app.ui import build_demo, launch

    demo = build_demo(make_tiny_pipeline())
    try:
        _, url, _ = launch(demo, host="127.0.0.1", port=free_port(), prevent_thread_lock=True, quiet=True)
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                hosts: set[str] = set()
                page.on("request", lambda req: hosts.add(urlparse(req.url).hostname or ""))
                page.goto(url)
                page.fill("#prompt textarea", "a blue star at the top")
                count = page.locator("#samples input[type=number]")
                count.fill("4")
                count.press("Enter")
                page.click("#generate")
                images = page.locator("#gallery .grid-container img")
                page.wait_for_function("document.querySelectorAll('#gallery .grid-container img').length === 4",
                                       timeout=30_000)
                assert images.count() == 4
                assert page.input_value("#diversity input") not in ("", None)  # the score is shown

                page.fill("#prompt textarea", "   ")  # an error reaches the user as a message, not a trace
                page.click("#generate")
                page.get_by_text("The caption is empty").first.wait_for(timeout=15_000)
                assert "Traceback" not in page.content()
                assert hosts <= {"127.0.0.1", "localhost"}, f"requests left the machine: {hosts}"
            finally:
                browser.close()
    finally:
        demo.close()
