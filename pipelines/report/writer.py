"""Writes the run report: one self-contained HTML page (plots embedded) and ``summary.json``.

:mod:`pipelines.metadata.reader` reads the run, :mod:`pipelines.report.build` gathers the
numbers, :mod:`pipelines.report.plots` draws the plots and :mod:`pipelines.report.page` writes the
page. The page needs no network, no script and no server: plots are PNGs in ``data:`` URIs, the
pipeline graph is inline SVG. ``summary.json`` holds the same numbers for machines.
"""

from __future__ import annotations

import json
import os

from pipelines.metadata.reader import load_run
from pipelines.report.build import build_summary
from pipelines.report.page import render_html
from pipelines.report.plots import make_plots

REPORT_FILE = "report.html"
SUMMARY_FILE = "summary.json"


def _json_default(value):
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def write_report(
    run_or_output_dir,
    pipeline_name: str | None = None,
    out: str | None = None,
    run_id: str | None = None,
) -> tuple[str, str]:
    """Writes ``report.html`` and ``summary.json`` for a run.

    Args:
      run_or_output_dir: a :class:`pipelines.local.runner.LocalRun`, or a run's output directory.
      pipeline_name: which pipeline of the metadata store (default: the most recently run).
      run_id: which run of the output directory (default: the newest).
      out: the HTML file to write (default: ``<output dir>/report.html``); ``summary.json`` is
        written beside it.
    Returns:
      ``(html_path, summary_json_path)``.
    """
    run = load_run(run_or_output_dir, pipeline_name, run_id)
    summary, extras = build_summary(run)
    plots = make_plots(summary, extras)
    summary["plots"] = sorted(plots)
    html_path = os.path.abspath(out or os.path.join(run.output_dir, REPORT_FILE))
    summary_path = os.path.join(os.path.dirname(html_path), SUMMARY_FILE)
    os.makedirs(os.path.dirname(html_path), exist_ok=True)
    page = render_html(summary, plots)
    # Write-then-rename: a browser or a CI step never reads half a report.
    for path, text in (
        (summary_path, json.dumps(summary, indent=1, sort_keys=True, default=_json_default)),
        (html_path, page),
    ):
        tmp = f"{path}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    return html_path, summary_path
