"""Opening a page in headless Chromium (Debian's ``chromium`` package): a screenshot, and what the
page did: console errors, uncaught exceptions, images that did not load.

``scripts/install_chromium.sh`` installs the browser. Nothing here needs a network or a driver:
Chromium prints the DOM after the page's ``load`` event (``--dump-dom``); a probe script placed
first in ``<head>`` of a copy of the page records errors and image sizes into that DOM.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import tempfile

_PROBE = """<script>
window.__probe = [];
window.addEventListener('error', function (e) {
  var t = e.target;
  window.__probe.push(t && t !== window && (t.src || t.href)
    ? 'resource failed: ' + (t.src || t.href).slice(0, 80) : 'uncaught: ' + e.message);
}, true);
['error', 'warn'].forEach(function (kind) {
  var original = console[kind];
  console[kind] = function () {
    window.__probe.push('console.' + kind + ': ' + Array.prototype.join.call(arguments, ' '));
    return original.apply(console, arguments);
  };
});
window.addEventListener('load', function () {
  var images = Array.prototype.slice.call(document.images);
  var out = {
    images: images.map(function (i) {
      return {id: i.id, alt: i.alt, complete: i.complete, width: i.naturalWidth,
              height: i.naturalHeight};
    }),
    errors: window.__probe,
    graph_nodes: document.querySelectorAll('svg.graph g.node').length,
    scroll_height: document.documentElement.scrollHeight,
    title: document.title
  };
  var pre = document.createElement('pre');
  pre.id = '__probe';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""

_FLAGS = [
    "--headless",
    "--no-sandbox",  # tests run as root in containers
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--hide-scrollbars",
    "--enable-logging=stderr",
    "--v=0",
]


def chromium() -> str | None:
    """Path of the Chromium binary, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _run(args: list[str], timeout: int) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        return subprocess.run(
            [chromium(), *_FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def console_lines(stderr: str) -> list[str]:
    """The page's console messages Chromium logged to stderr (``...:CONSOLE...] "msg"``)."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def inspect_page(html_path: str, width: int = 1400, timeout: int = 90) -> dict:
    """Loads a copy of the page with the probe; returns what the probe saw, plus console lines.

    Returns:
      ``{"images": [{id, alt, complete, width, height}], "errors": [...], "graph_nodes": n,
      "scroll_height": px, "title": str, "console": [stderr console lines]}``.
    """
    with open(html_path, encoding="utf-8") as f:
        page = f.read()
    probed = re.sub(r"<head>", "<head>" + _PROBE, page, count=1)
    assert probed != page, "the page has no <head>"
    with tempfile.TemporaryDirectory(prefix="probe-") as tmp:
        copy = os.path.join(tmp, "page.html")
        with open(copy, "w", encoding="utf-8") as f:
            f.write(probed)
        # The same width as the screenshot, so scroll_height is the screenshot's full height.
        args = [f"--window-size={width},1000", "--virtual-time-budget=10000", "--dump-dom"]
        done = _run([*args, f"file://{copy}"], timeout)
    match = re.search(r'<pre id="__probe">(.*?)</pre>', done.stdout, re.S)
    if match is None:
        raise AssertionError(
            f"the page never reached its load event (chromium rc={done.returncode}); "
            f"stderr tail: {done.stderr[-2000:]}"
        )
    result = json.loads(html.unescape(match.group(1)))
    result["console"] = console_lines(done.stderr)
    return result


def screenshot(html_path: str, png_path: str, width: int = 1400, height: int = 3000, timeout=90):
    """Writes a PNG of the page as Chromium renders it at ``width`` x ``height``."""
    done = _run(
        [
            f"--screenshot={os.path.abspath(png_path)}",
            f"--window-size={width},{height}",
            "--virtual-time-budget=10000",
            f"file://{os.path.abspath(html_path)}",
        ],
        timeout,
    )
    if not os.path.exists(png_path):
        raise AssertionError(f"no screenshot (rc={done.returncode}): {done.stderr[-2000:]}")
    return console_lines(done.stderr)
