"""Photograph the method comparison's page (page/report.html, written by report.sh) in headless Chromium:
page_figure1.png (test accuracy against trainable parameters, Rotten Tomatoes), page_pareto.png (its Pareto
fronts) and page_table.png (the top of the run table). Needs Chromium (`make browser`) and playwright (dev extras).

    bash experiments/method_comparison/report.sh && python experiments/method_comparison/screenshots.py
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

HERE = Path(__file__).resolve().parent


def main() -> int:
    page_file = HERE / "page" / "report.html"
    if not page_file.is_file():
        raise SystemExit(f"{page_file} is missing: run experiments/method_comparison/report.sh first")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: errors.append(f"request {r.url}") if r.url != page_file.as_uri() else None)
        page.goto(page_file.as_uri(), wait_until="load")
        page.wait_for_function("document.querySelectorAll('.plotly-graph-div .main-svg').length > 0")
        plots = page.locator(".plotly-graph-div")
        plots.nth(0).screenshot(path=HERE / "page_figure1.png")
        plots.nth(1).screenshot(path=HERE / "page_pareto.png")
        page.set_viewport_size({"width": 1300, "height": 700})
        page.locator(".tablewrap").screenshot(path=HERE / "page_table.png")
        browser.close()
    if errors:
        print("\n".join(errors), file=sys.stderr)
        return 1
    print("wrote", ", ".join(str(HERE / n) for n in ("page_figure1.png", "page_pareto.png", "page_table.png")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
