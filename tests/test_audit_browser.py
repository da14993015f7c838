"""The audit report in a real headless browser: Debian's chromium driven by Playwright.

Fails (never skips) when Chromium or Playwright is missing; ``_provision.chromium_path`` finds Chromium,
or installs Debian's when the tests run as root.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _provision import chromium_path
from _traffic import write_traffic

from guardrail._audit.load import load
from guardrail._audit.report import render

REPO = Path(__file__).resolve().parent.parent
SCREENSHOT = REPO / "docs" / "audit-report.png"
UPDATE_ENV = "GUARDRAIL_UPDATE_SCREENSHOT"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(
            "Playwright for Python is missing: pip install -e '.[dev]' (no browser download needed)", pytrace=False
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=FLAGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("audit-browser")
    spans = folder / "spans.jsonl"
    write_traffic(spans)
    out = folder / "report.html"
    audit = load(str(spans))
    audit.source = "spans.jsonl: synthetic traffic of three deployments over 14 days (tests/_traffic.py)"
    render(audit, out)
    return out


def test_report_renders_without_errors(browser: Any, report: Path, tmp_path: Path) -> None:
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    errors: list[str] = []
    requests: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("request", lambda request: requests.append(request.url))
    page.goto(report.as_uri(), wait_until="load")

    charts = page.evaluate(
        """() => Array.from(document.querySelectorAll("figure img.chart")).map(img => ({
            id: img.parentElement.id, complete: img.complete, natural: img.naturalWidth,
            shown: img.getBoundingClientRect().width}))"""
    )
    assert [c["id"] for c in charts] == ["fig-radar", "fig-pca", "fig-drift"]
    for chart in charts:
        assert chart["complete"] and chart["natural"] > 300 and chart["shown"] > 300, chart
    assert page.locator("table").count() == 4  # decisions, rules, policies, blocked responses
    assert page.locator("h1").inner_text() == "value-guardrail audit report"
    # Self-contained: the page itself is the only thing loaded (the figures are data: URIs).
    assert [url for url in requests if not url.startswith("data:")] == [report.as_uri()]
    assert errors == []

    page.screenshot(path=str(tmp_path / "audit-report-full.png"), full_page=True)
    assert (tmp_path / "audit-report-full.png").stat().st_size > 50_000
    # docs/audit.md shows the top of the report: summary, radar and map. Written when missing or asked for,
    # so that a test run does not rewrite a tracked file each time.
    if not SCREENSHOT.exists() or os.environ.get(UPDATE_ENV) == "1":
        bottom = page.locator("#fig-pca").bounding_box()
        assert bottom is not None
        SCREENSHOT.parent.mkdir(exist_ok=True)
        height = bottom["y"] + bottom["height"] + 16
        page.screenshot(path=str(SCREENSHOT), full_page=True, clip={"x": 0, "y": 0, "width": 1440, "height": height})
    page.close()
