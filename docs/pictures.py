"""The demo's report pictures (README.md, docs/results/toyworld.md), from a demo run's HTML report.

Takes the first rows of the report's "same prompt, same seed" grid and of its
first attack grid, screenshots them in headless Chromium, and writes them as
256-colour PNGs (small enough to keep in git):

    .venv/bin/python docs/pictures.py runs/demo5 [--rows 6] [--out docs]

writes docs/demo-report.png and docs/demo-attack.png.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

# h2 heading that precedes the grid -> picture name
GRIDS = {"Same prompt, same seed": "demo-report.png", "Attacks": "demo-attack.png"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="a demo output folder (holds eval/report.html)")
    ap.add_argument("--rows", type=int, default=6, help="image rows to keep in each picture")
    ap.add_argument("--out", default="docs")
    args = ap.parse_args()

    from PIL import Image
    from playwright.sync_api import sync_playwright

    report = Path(args.run) / "eval" / "report.html"
    if not report.is_file():
        raise SystemExit(f"error: {report} does not exist; run `unsee demo --out {args.run}` first")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(report.resolve().as_uri())
        for heading, name in GRIDS.items():
            # the first grid table after the heading, cut to its header and first rows
            table = page.locator(
                f"xpath=//h2[normalize-space()='{heading}']/following::table[contains(@class,'grid')][1]"
            )
            table.evaluate("(t, n) => Array.from(t.rows).slice(n + 1).forEach(r => r.remove())", args.rows)
            with tempfile.TemporaryDirectory() as tmp:
                shot = Path(tmp) / name
                table.screenshot(path=str(shot))
                img = Image.open(shot).convert("RGB").quantize(256)
                dest = Path(args.out) / name
                img.save(dest.with_suffix(".tmp.png"), optimize=True)
                dest.with_suffix(".tmp.png").replace(dest)
            print(f"{dest}: {img.size[0]}x{img.size[1]}")
        browser.close()


if __name__ == "__main__":
    main()
