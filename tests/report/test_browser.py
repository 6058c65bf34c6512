"""The report in a real headless Chromium (Selenium): no network request, figures rendered, PDF printing.

Skips locally when Chromium / chromedriver are missing; FAILS when CI=true.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

pytestmark = pytest.mark.e2e


def _require_browser() -> None:
    missing = [t for t in ("chromium", "chromedriver") if shutil.which(t) is None]
    if missing:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{missing} required when CI=true (Debian chromium + chromium-driver)")
        pytest.skip(f"{missing} not installed (apt-get install chromium chromium-driver); FAILS when CI=true")
    pytest.importorskip("selenium")


def _requests(driver) -> list[str]:
    """URLs of every request Chromium started (CDP Network.requestWillBeSent from the performance log)."""
    urls = []
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg.get("method") == "Network.requestWillBeSent":
            urls.append(msg["params"]["request"]["url"])
    return urls


def _open(html_path, *, height: int = 1600):
    from clinmm.report.render import chrome_driver

    driver = chrome_driver(extra_args=(f"--window-size=1280,{height}",), performance_log=True)
    driver.get(html_path.resolve().as_uri())
    return driver


def _foreign(urls: list[str], own: str) -> list[str]:
    return [u for u in urls if u != own and not u.startswith("data:")]


def test_report_opens_without_network_and_shows_figures(toy_report, tmp_path):
    _require_browser()
    from PIL import Image

    from clinmm.report.render import render_html

    html = render_html(toy_report, tmp_path / "report.html")
    driver = _open(html)
    try:
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.alt]);")
        driver.execute_script("document.getElementById('discrimination').scrollIntoView();")
        driver.execute_script("window.scrollBy(0, 260);")
        shot = tmp_path / "report_screenshot.png"
        assert driver.save_screenshot(str(shot))
        urls = _requests(driver)
        title = driver.title
    finally:
        driver.quit()
    assert title == toy_report.title
    assert len(images) >= 4 and all(ok and width > 0 for ok, width, _ in images), images
    assert html.resolve().as_uri() in urls  # the log works: the document itself was seen
    assert _foreign(urls, html.resolve().as_uri()) == []
    # the screenshot shows the ROC figure: pixels of its line colour (Okabe-Ito blue #0072B2)
    px = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    blue = np.all(np.abs(px - np.array([0, 114, 178])) < 30, axis=-1)
    assert blue.sum() > 500, blue.sum()


def test_network_check_catches_an_external_request(tmp_path):
    """Negative control: the same check flags a page that loads an image from elsewhere (localhost, closed port)."""
    _require_browser()
    page = tmp_path / "leaky.html"
    page.write_text('<html><body><img src="http://127.0.0.1:9/pixel.png"></body></html>')
    driver = _open(page, height=400)
    try:
        urls = _requests(driver)
    finally:
        driver.quit()
    assert _foreign(urls, page.resolve().as_uri()) == ["http://127.0.0.1:9/pixel.png"]


def test_pdf_prints_through_chromium(toy_report, tmp_path):
    _require_browser()
    from clinmm.report.render import print_pdf, render_html

    html = render_html(toy_report, tmp_path / "report.html")
    pdf = print_pdf(html, tmp_path / "report.pdf")
    data = pdf.read_bytes()
    assert data[:5] == b"%PDF-"
    assert data.count(b"/Type /Page") + data.count(b"/Type/Page") >= 3  # several pages (and the /Pages node)
    assert len(data) > 50_000  # figures embedded
