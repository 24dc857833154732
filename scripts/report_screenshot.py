"""Regenerates docs/report-screenshot.png, the README's picture of the run report, from a real run.

    make demo                                   # writes demo-output/report.html
    python scripts/report_screenshot.py         # -> docs/report-screenshot.png
    python scripts/report_screenshot.py RUN_OUTPUT/report.html docs/report-screenshot.png

The page is opened in headless Chromium (scripts/install_chromium.sh installs it) with the probe the
report tests use: the script refuses to write a picture of a page whose images did not load or whose
console logged anything, and shoots the whole page (up to MAX_HEIGHT pixels) at the tests' width.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_REPORT = os.path.join(REPO_ROOT, "demo-output", "report.html")
DEFAULT_PNG = os.path.join(REPO_ROOT, "docs", "report-screenshot.png")
WIDTH = 1400
MAX_HEIGHT = 6000


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, REPO_ROOT)
    from tests import browser

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("report", nargs="?", default=DEFAULT_REPORT, help="report.html of a run")
    parser.add_argument("png", nargs="?", default=DEFAULT_PNG, help="the PNG to write")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.report):
        print(
            f"report_screenshot: {args.report} does not exist: run `make demo` (or `tfxopt run`) "
            "first",
            file=sys.stderr,
        )
        return 2
    if browser.chromium() is None:
        print(
            "report_screenshot: no chromium: run scripts/install_chromium.sh (as root)",
            file=sys.stderr,
        )
        return 2
    seen = browser.inspect_page(args.report, width=WIDTH)
    broken = [image for image in seen["images"] if not image["complete"] or not image["width"]]
    if seen["errors"] or seen["console"] or broken:
        print(
            f"report_screenshot: the page is not clean: errors {seen['errors']}, console "
            f"{seen['console']}, broken images {broken}",
            file=sys.stderr,
        )
        return 1
    height = min(seen["scroll_height"], MAX_HEIGHT)
    with tempfile.TemporaryDirectory() as tmp:  # the old picture stays until the new one exists
        shot = os.path.join(tmp, "shot.png")
        browser.screenshot(args.report, shot, width=WIDTH, height=height)
        shutil.move(shot, args.png)
    print(f"wrote {args.png} ({WIDTH}x{height}, {seen['graph_nodes']} steps in the graph)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
