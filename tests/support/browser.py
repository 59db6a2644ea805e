"""Headless Chromium for the browser tests (tests/browser): where it is, a driver, the app served on a
real port, and where screenshots go."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from flask import Flask
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver
from werkzeug.serving import make_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# Why the browser tests cannot run here, or None.
MISSING = (
    None
    if CHROMIUM.exists() and CHROMEDRIVER.exists()
    else "browser tests need /usr/bin/chromium and /usr/bin/chromedriver "
    "(apt-get install chromium chromium-driver; .ci/run does it)"
)
# Screenshots and axe reports of the browser tests.
ARTEFACTS = Path(os.environ.get("COORDINATION_TEST_ARTEFACTS") or Path(__file__).parents[1] / "artefacts")

_ARGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def chromium(profile: Path, *extra: str, wait: float, script_wait: float | None = None) -> WebDriver:
    """A headless Chromium with its own profile directory; ``extra``: more command-line arguments."""
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (*_ARGS, *extra, f"--user-data-dir={profile}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(wait)
    if script_wait is not None:
        driver.set_script_timeout(script_wait)
    return driver


@contextmanager
def serving(app: Flask, name: str = "browser-test-server") -> Iterator[str]:
    """The app on a real loopback port while the block runs: its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name=name, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()
