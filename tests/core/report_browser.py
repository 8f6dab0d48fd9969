"""Open an ``oir-edit report`` page in headless Chromium (Playwright driving the system browser).

Playwright's own browser downloads are never used: ``executable_path`` is the Debian ``chromium``
(``OIR_CHROMIUM`` overrides). What the page loads besides its own file is recorded, so a test can
check that it opens offline.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
PAGE_TIMEOUT_MS = 180_000

_FACTS = """() => {
  const images = [...document.images];
  return {
    images: images.length,
    broken: images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt),
    largest_side: images.reduce((m, i) => Math.max(m, i.naturalWidth, i.naturalHeight), 0),
    svgs: document.querySelectorAll('svg').length,
    cases: document.querySelectorAll('section.case').length,
    scripts: document.scripts.length,
    outside_links: [...document.querySelectorAll('[src],[href]')]
      .map(e => e.getAttribute('src') || e.getAttribute('href'))
      .filter(u => !u.startsWith('data:') && !u.startsWith('#')),
  };
}"""


def chromium() -> str:
    """The system Chromium, or skip (CI installs it; a skip fails CI)."""
    found = os.environ.get("OIR_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.skip("no Chromium (set OIR_CHROMIUM or install it: apt-get install chromium)")
    return found


def open_page(path: Path) -> dict[str, Any]:
    """Load ``path`` (a local HTML file) and return what its pictures and requests look like.

    Keys: ``images`` (count), ``broken`` (alt texts of pictures that did not load), ``largest_side``
    (largest natural width or height), ``svgs``, ``cases``, ``scripts``, ``outside_links`` (src/href
    that are not embedded), ``requests`` (URLs other than the page itself and ``data:``).
    """
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is a test extra")
    executable = chromium()
    with sync_api.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            requests: list[str] = []
            page.on("request", lambda request: requests.append(request.url))
            page.goto(path.resolve().as_uri(), wait_until="load", timeout=PAGE_TIMEOUT_MS)
            facts = page.evaluate(_FACTS)
        finally:
            browser.close()
    own = path.resolve().as_uri()
    facts["requests"] = [url for url in requests if url != own and not url.startswith("data:")]
    return facts
