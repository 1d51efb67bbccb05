"""A real headless Chromium for the report tests, and a local HTTP server for the pages.

The browser is Debian's `chromium` driven through its `chromium-driver` by Selenium, given both
paths, so nothing downloads a browser or a driver. `make test` installs the two packages first
(scripts/ensure-browser); where they cannot be installed the tests skip with one line saying so.
Pages are served over HTTP, as a bucket serves them: browsers refuse scripts reading files of a
page opened from disk.
"""

from __future__ import annotations

import functools
import http.server
import json
import re
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).resolve().parent.parent / ".cache" / "test-artifacts"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def serve(folder: Path) -> Iterator[str]:
    """Serve `folder` on a free local port; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def chromium() -> Iterator[Any]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("no chromium and chromium-driver here: run scripts/ensure-browser as root")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--autoplay-policy=no-user-gesture-required",
        "--window-size=1280,900",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_script_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def page_data(page: Path) -> dict[str, Any]:
    """The data block a report page was written with."""
    found = re.search(
        r'<script id="report-data" type="application/json">(.*?)</script>', page.read_text(), re.S
    )
    assert found, f"{page} holds no report data"
    return json.loads(found.group(1))


def screenshot(driver: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    driver.save_screenshot(str(path))
    return path


def wait_for(driver: Any, script: str, *args: Any) -> Any:
    """Poll `script` (a function body returning a value) until it is truthy, at most 30 s;
    returns its last value, so a failing assertion shows what the page had."""
    return driver.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        const check = new Function(...Array.from({length: arguments.length - 2}, (_, i) => `a${i}`),
                                   arguments[0]);
        const args = Array.from(arguments).slice(1, -1);
        const started = Date.now();
        const tick = () => {
          let value = null;
          try { value = check(...args); } catch (error) { value = null; }
          if (value || Date.now() - started > 30000) done(value);
          else setTimeout(tick, 100);
        };
        tick();
        """,
        script,
        *args,
    )
