"""The run report's HTML page: inline CSS, the pipeline graph as inline SVG, tables, plots.

No script and nothing fetched: the page opens from a file, offline, in any browser.
"""

from __future__ import annotations

import html
from collections import defaultdict

from components.common.numbers import (
    BASELINE,
    finite,
    fmt_bytes,
    fmt_ms,
    fmt_percent,
    fmt_value,
    get_path,
)
from pipelines.report import layers as layer_report
from pipelines.report.profiles import delegation_text

# Box fill and border per step state (the states ML Metadata records).
STATE_COLOURS = {
    "COMPLETE": ("#e8f5e9", "#2e7d32"),
    "CACHED": ("#e3f2fd", "#1565c0"),
    "FAILED": ("#ffebee", "#c62828"),
    "RUNNING": ("#fff8e1", "#ef6c00"),
    "NEW": ("#fff8e1", "#ef6c00"),
    "CANCELED": ("#eeeeee", "#616161"),
}

# --------------------------------------------------------------------------- the pipeline graph


def graph_layout(steps: list[dict]) -> dict[str, tuple[int, int]]:
    """node id -> (column, row): columns by longest path from a source, rows ordered by parents."""
    ids = [s["node_id"] for s in steps]
    upstream = {s["node_id"]: [u for u in s["upstream"] if u in ids] for s in steps}
    depth: dict[str, int] = {}

    def visit(node, trail=()):
        if node in depth:
            return depth[node]
        if node in trail:  # a cycle cannot happen in a TFX DAG; keep the layout total anyway
            return 0
        parents = upstream[node]
        depth[node] = 1 + max((visit(p, (*trail, node)) for p in parents), default=-1)
        return depth[node]

    for node in ids:
        visit(node)
    columns: dict[int, list[str]] = defaultdict(list)
    for node in ids:  # execution order within a column
        columns[depth[node]].append(node)
    position: dict[str, tuple[int, int]] = {}
    for col in sorted(columns):
        nodes = columns[col]
        if col > 0:
            # Barycentre of the parents' rows: fewer crossing edges.
            def centre(node):
                rows = [position[p][1] for p in upstream[node] if p in position]
                return sum(rows) / len(rows) if rows else 0

            nodes = sorted(nodes, key=lambda n: (centre(n), ids.index(n)))
        for row, node in enumerate(nodes):
            position[node] = (col, row)
    return position


def _duration(seconds) -> str:
    if not finite(seconds):
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)} min {rest:02.0f} s"


def graph_svg(steps: list[dict]) -> str:
    """The pipeline graph as inline SVG: one box per step (state colour, duration), edges."""
    position = graph_layout(steps)
    if not position:
        return ""
    longest = max(len(node) for node in position)
    # Wide enough for the longest id at 12.5 px bold (ids longer than 30 characters are cut).
    box_w = int(min(240, max(150, 7.6 * min(longest, 30) + 18)))
    col_w, row_h, box_h, margin = box_w + 28, 76, 56, 12
    rows_per_col: dict[int, int] = defaultdict(int)
    for col, row in position.values():
        rows_per_col[col] = max(rows_per_col[col], row + 1)
    max_rows = max(rows_per_col.values())
    width = margin * 2 + (max(rows_per_col) + 1) * col_w - (col_w - box_w)
    height = margin * 2 + max_rows * row_h - (row_h - box_h)

    def xy(node):
        col, row = position[node]
        # Centre short columns vertically.
        offset = (max_rows - rows_per_col[col]) * row_h / 2
        return margin + col * col_w, margin + offset + row * row_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="graph" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="pipeline graph">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" '
        'fill="#78909c"/></marker></defs>',
    ]
    for step in steps:
        tx, ty = xy(step["node_id"])
        for parent in step["upstream"]:
            if parent not in position:
                continue
            sx, sy = xy(parent)
            x1, y1 = sx + box_w, sy + box_h / 2
            x2, y2 = tx - 2, ty + box_h / 2
            bend = max(30.0, (x2 - x1) / 2)
            parts.append(
                f'<path d="M {x1:.1f} {y1:.1f} C {x1 + bend:.1f} {y1:.1f}, {x2 - bend:.1f} '
                f'{y2:.1f}, {x2:.1f} {y2:.1f}" fill="none" stroke="#90a4ae" stroke-width="1.3" '
                'marker-end="url(#arrow)"/>'
            )
    for step in steps:
        x, y = xy(step["node_id"])
        fill, stroke = STATE_COLOURS.get(step["state"], ("#f5f5f5", "#757575"))
        name = step["node_id"]
        shown = name if len(name) <= 30 else name[:29] + "\u2026"
        tip = html.escape(
            f"{name} ({step.get('component') or '?'}): {step['state']}, "
            f"{_duration(step['duration_s'])}"
        )
        parts.append(
            f'<g class="node" data-state="{html.escape(step["state"])}"><title>{tip}</title>'
            f'<rect x="{x}" y="{y}" width="{box_w}" height="{box_h}" rx="7" fill="{fill}" '
            f'stroke="{stroke}" stroke-width="1.6"/>'
            f'<text x="{x + box_w / 2}" y="{y + 21}" text-anchor="middle" font-size="12.5" '
            f'font-weight="600" fill="#212121">{html.escape(shown)}</text>'
            f'<text x="{x + box_w / 2}" y="{y + 41}" text-anchor="middle" font-size="11.5" '
            f'fill="{stroke}">{html.escape(step["state"].lower())} \u00b7 '
            f"{html.escape(_duration(step['duration_s']))}</text></g>"
        )
    parts.append("</svg>")
    return "".join(parts)


# --------------------------------------------------------------------------- HTML


def _e(value) -> str:
    return html.escape(str(value))


def _verdict(model: dict) -> tuple[str, str]:
    """(text, css class) of a model's standing at the gate."""
    if model["role"] == "baseline":
        return "baseline", "base"
    if "passed_all" not in model:
        return "not gated", ""
    if model.get("selected"):
        return "BLESSED", "blessed"
    return ("passed", "pass") if model.get("passed_all") else ("failed", "fail")


def _task(summary: dict) -> dict:
    """The run's task and how its metric reads (older summaries: top-1 accuracy)."""
    return summary.get("task") or {"label": "top-1 accuracy", "percent": True}


def _metric_text(summary: dict, value) -> str:
    if _task(summary)["percent"]:
        return fmt_percent(value)
    return "-" if not finite(value) else f"{value:.4g}"


def _model_rows(summary: dict) -> str:
    """One row per model: the figures the issue asks for, the gate's verdict."""
    headers = [
        "model (stages)",
        "size raw / gzip (compression)",
        "SavedModel raw / gzip",
        "kernel sparsity",
        "clusters (max unique / kernel)",
        "dtype: weights; I/O",
        _task(summary)["label"],
        "drop, points [95% CI]" if _task(summary)["percent"] else "increase [95% CI]",
        "latency ms p50 / p95 / p99",
        "XNNPACK delegated",
        "speed-up",
        "peak RSS TFLite (model's part)",
    ]
    out = ["<table class='models'><thead><tr>"]
    out += [f"<th>{_e(h)}</th>" for h in headers]
    out.append("</tr></thead><tbody>")
    for m in summary["models"]:
        size = m.get("size") or {}
        lat = m.get("latency_ms") or {}
        interval = m.get("accuracy_drop_interval_points")
        drop = m.get("accuracy_drop_points")
        if not _task(summary)["percent"]:
            drop = get_path(m, "metrics", "error_increase")
            interval = None
        drop_text = "-" if not finite(drop) else f"{drop:+.4g}"
        if interval and all(finite(v) for v in interval):
            drop_text += f"<br><span class='small'>[{interval[0]:+.2f}, {interval[1]:+.2f}]</span>"
        clusters = m.get("clusters")
        unique = m.get("max_unique_values_per_kernel")
        mode = m.get("quantization_mode")
        dtype_text = (
            f"{_e('/'.join(m.get('tflite_weight_dtypes') or []) or '-')}; "
            f"{_e(m.get('tflite_io_dtype') or '-')}"
            + (f"<br><span class='small'>mode {_e(mode)}</span>" if mode else "")
        )
        mem = m.get("peak_memory") or {}
        mem_text = (
            f"{fmt_bytes(mem.get('tflite_peak_rss_bytes'))} "
            f"({fmt_bytes(mem.get('tflite_model_peak_rss_bytes'))})"
            if mem
            else "<span class='small'>not measured</span>"
        )
        verdict, cls = _verdict(m)
        stages = " \u2192 ".join(m.get("stages") or []) or (
            "the input model" if m["role"] == "baseline" else "-"
        )
        multi = m.get("multi_thread_latency_ms") or {}
        multi_text = (
            f"<br><span class='small'>p50 {fmt_ms(multi.get('p50_ms'))} at "
            f"{_e(multi.get('num_threads'))} threads</span>"
            if multi
            else ""
        )
        ratio = m.get("compression_ratio")
        failure = m.get("failure") or {}
        failed_text = (
            f"<br><span class='small fail'>{_e(failure['summary'])}</span>" if failure else ""
        )
        cells = [
            f"<b>{_e(m['name'])}</b> <span class='tag {cls}'>{_e(verdict)}</span>"
            f"<br><span class='small'>{_e(stages)}</span>{failed_text}",
            f"{fmt_bytes(size.get('raw_bytes'))} / {fmt_bytes(size.get('gzip_bytes'))}"
            + (f"<br><span class='small'>{ratio:.1f}x smaller</span>" if finite(ratio) else ""),
            f"{fmt_bytes(m.get('saved_model_bytes'))} / {fmt_bytes(m.get('saved_model_gzip_bytes'))}",
            fmt_percent(m.get("kernel_sparsity"), 1),
            f"{_e(clusters if clusters is not None else '-')} ({_e(fmt_value(unique))})",
            dtype_text,
            _metric_text(summary, m.get("accuracy")),
            drop_text,
            f"{fmt_ms(lat.get('p50_ms'))} / {fmt_ms(lat.get('p95_ms'))} / {fmt_ms(lat.get('p99_ms'))}"
            + multi_text,
            _e(delegation_text(m.get("delegation"))),
            f"{m['speedup']:.2f}x" if finite(m.get("speedup")) else "-",
            mem_text,
        ]
        out.append(f"<tr class='{cls}'>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out) + _fallback_list(summary)


def _fallback_list(summary: dict) -> str:
    """One line per model whose graph XNNPACK did not take whole: which ops and why."""
    items = [
        f"<li><b>{_e(m['name'])}</b>: {_e(m['delegation']['reason'])}</li>"
        for m in summary["models"]
        if (m.get("delegation") or {}).get("reason")
    ]
    if not items:
        return ""
    return (
        "<p class='small'>Graphs XNNPACK did not take whole:</p><ul class='small'>"
        + "".join(items)
        + "</ul>"
    )


def _gate_tables(summary: dict) -> str:
    out = []
    for m in summary["models"]:
        if m["role"] != "candidate" or "rules" not in m:
            continue
        cls = "blessed" if m.get("selected") else ("pass" if m.get("passed_all") else "fail")
        title = {"blessed": "blessed", "pass": "passed every rule", "fail": "failed"}[cls]
        out.append(
            f"<div class='card {cls}'><h3>{_e(m['name'])} <span class='tag {cls}'>"
            f"{_e(title)}</span></h3><table><thead><tr><th>rule</th><th>value</th><th></th>"
            "<th>threshold</th><th>verdict</th></tr></thead><tbody>"
        )
        for rule in m["rules"]:
            verdict = {True: "pass", False: "FAIL", None: "skipped"}[rule.get("passed")]
            rcls = {True: "pass", False: "fail", None: ""}[rule.get("passed")]
            out.append(
                f"<tr class='{rcls}'><td>{_e(rule['rule'])}</td><td>{_e(fmt_value(rule.get('value')))}"
                f"</td><td>{_e(rule.get('op', ''))}</td><td>{_e(fmt_value(rule.get('threshold')))}</td>"
                f"<td class='verdict'>{verdict}</td></tr>"
            )
        for req in m.get("requirements") or []:
            verdict = "pass" if req.get("passed") else "FAIL"
            rcls = "pass" if req.get("passed") else "fail"
            out.append(
                f"<tr class='{rcls}'><td>{_e(req['check'])}</td><td colspan='3'>"
                f"{_e(req.get('detail', ''))}</td><td class='verdict'>{verdict}</td></tr>"
            )
        out.append("</tbody></table>")
        for text in m.get("rejected_because") or []:
            out.append(f"<p class='small fail'>rejected: {_e(text)}</p>")
        out.append("</div>")
    return "<div class='cards'>" + "".join(out) + "</div>" if out else ""


def _steps_table(summary: dict) -> str:
    longest = max((s["duration_s"] for s in summary["steps"]), default=0) or 1
    rows = []
    for i, s in enumerate(summary["steps"], 1):
        _, stroke = STATE_COLOURS.get(s["state"], ("", "#757575"))
        width = 100 * s["duration_s"] / longest
        rows.append(
            f"<tr><td>{i}</td><td>{_e(s['node_id'])}</td><td>{_e(s['component'])}</td>"
            f"<td style='color:{stroke}'>{_e(s['state'])}</td>"
            f"<td class='num'>{_e(_duration(s['duration_s']))}</td>"
            f"<td class='bar'><span style='width:{width:.1f}%;background:{stroke}'></span></td></tr>"
        )
    return (
        "<table class='steps'><thead><tr><th>#</th><th>step</th><th>component</th><th>state</th>"
        "<th>duration</th><th></th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


def _push_html(push: dict | None) -> str:
    if push is None:
        return "<p>This run has no Pusher.</p>"
    if not push["pushed"]:
        return f"<p class='fail'><b>Nothing was pushed</b>: {_e(push.get('reason') or 'not blessed')}</p>"
    out = [f"<p>Model <b>{_e(push.get('model_name'))}</b> ({_e(push.get('candidate') or '')})</p>"]
    if push["serving"]:
        out.append(
            "<table><thead><tr><th>serving repository</th><th>version</th><th>new?</th>"
            "<th>labels</th></tr></thead><tbody>"
        )
        for d in push["serving"]:
            labels = ", ".join(f"{k}={v}" for k, v in sorted(d["labels"].items()))
            state = "new version" if d.get("created") else "identical to an existing version"
            out.append(
                f"<tr><td>{_e(d['path'])}</td><td class='num'><b>{_e(d['version'])}</b></td>"
                f"<td>{_e(state)}</td><td>{_e(labels)}</td></tr>"
            )
        out.append("</tbody></table>")
    if push["ota"]:
        out.append(
            "<table><thead><tr><th>OTA channel</th><th>model version</th><th>release sequence"
            "</th><th>signing key</th><th>manifest</th></tr></thead><tbody>"
        )
        for d in push["ota"]:
            out.append(
                f"<tr><td><b>{_e(d['channel'])}</b></td><td class='num'>"
                f"{_e(d['model_version'])}</td><td class='num'>{_e(d['manifest_sequence'])}</td>"
                f"<td>{_e(d['key_id'])}</td><td>{_e(d['manifest_path'])}</td></tr>"
            )
        out.append("</tbody></table>")
    return "".join(out)


def _headline(summary: dict) -> str:
    gate = summary.get("gate")
    failed = summary.get("failed_steps")
    parts = []
    if failed:
        parts.append(
            f"<div class='banner fail'>Run failed at {_e(', '.join(failed))}: the report shows "
            "what the finished steps recorded.</div>"
        )
    if gate:
        if gate["blessed"]:
            parts.append(
                f"<div class='banner blessed'>BLESSED <b>{_e(gate['selected'])}</b> "
                f"(objective: {_e(gate['objective'])}). {_e(gate['reason'])}</div>"
            )
        else:
            parts.append(
                f"<div class='banner fail'>NOT BLESSED: nothing is pushed. {_e(gate['reason'])}"
                "</div>"
            )
    task = _task(summary)
    if "kind" in task:
        direction = "higher" if task.get("higher_is_better", True) else "lower"
        parts.append(
            f"<p class='small'>Task <b>{_e(task['kind'])}</b>: every model is scored by its "
            f"{_e(task['label'])} on the eval split ({direction} is better).</p>"
        )
    models = {m["name"]: m for m in summary["models"]}
    base, chosen = models.get(BASELINE), models.get(summary.get("chosen") or "")
    if base and chosen:
        tiles = []
        bsize, csize = (
            get_path(base, "metrics", "size_bytes"),
            get_path(chosen, "metrics", "size_bytes"),
        )
        if finite(bsize) and finite(csize) and csize:
            tiles.append(
                (
                    "size",
                    f"{fmt_bytes(bsize)} \u2192 {fmt_bytes(csize)}",
                    f"{bsize / csize:.1f}x smaller",
                )
            )
        bacc, cacc = base.get("accuracy"), chosen.get("accuracy")
        if finite(bacc) and finite(cacc) and not _task(summary)["percent"]:
            tiles.append(
                (
                    _task(summary)["label"],
                    f"{bacc:.4g} \u2192 {cacc:.4g}",
                    f"{cacc - bacc:+.4g} (lower is better)",
                )
            )
        elif finite(bacc) and finite(cacc):
            tiles.append(
                (
                    _task(summary)["label"],
                    f"{fmt_percent(bacc)} \u2192 {fmt_percent(cacc)}",
                    f"{100 * (bacc - cacc):+.2f} pt drop",
                )
            )
        blat, clat = (
            get_path(base, "metrics", "latency_ms"),
            get_path(chosen, "metrics", "latency_ms"),
        )
        if finite(blat) and finite(clat) and clat:
            stat = ((gate or {}).get("rules") or {}).get("latency_statistic", "p95")
            tiles.append(
                (
                    f"latency {stat}",
                    f"{fmt_ms(blat)} \u2192 {fmt_ms(clat)} ms",
                    f"{blat / clat:.2f}x speed-up",
                )
            )
        parts.append(
            "<div class='tiles'>"
            + "".join(
                f"<div class='tile'><div class='k'>{_e(k)} (baseline \u2192 {_e(chosen['name'])})"
                f"</div><div class='v'>{_e(v)}</div><div class='s'>{_e(s)}</div></div>"
                for k, v, s in tiles
            )
            + "</div>"
        )
    return "".join(parts)


_CSS = """
body{font-family:"Liberation Sans",Arial,Helvetica,sans-serif;margin:24px 32px;color:#212121;
  background:#fafafa;max-width:1500px}
h1{font-size:24px;margin:0 0 4px} h2{font-size:19px;margin:30px 0 10px;border-bottom:2px solid
  #cfd8dc;padding-bottom:4px} h3{font-size:15px;margin:0 0 8px}
.meta{color:#546e7a;font-size:13px}
table{border-collapse:collapse;font-size:13px;background:white;margin:6px 0}
th,td{border:1px solid #cfd8dc;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eceff1} td.num{text-align:right}
table.models{width:100%} table.models td{min-width:60px}
tr.blessed td{background:#fffde7} tr.fail td{color:#8e1b1b}
.tag{display:inline-block;padding:1px 7px;border-radius:9px;font-size:12px;font-weight:600}
.tag.blessed{background:#f9a825;color:black} .tag.pass{background:#c8e6c9;color:#1b5e20}
.tag.fail{background:#ffcdd2;color:#b71c1c} .tag.base{background:#cfd8dc}
tr.pass .verdict{color:#2e7d32;font-weight:600} tr.fail .verdict{color:#c62828;font-weight:700}
.banner{padding:10px 14px;border-radius:6px;margin:12px 0;font-size:15px}
.banner.blessed{background:#fff8e1;border:1px solid #f9a825}
.banner.fail{background:#ffebee;border:1px solid #c62828}
.tiles{display:flex;gap:14px;flex-wrap:wrap} .tile{background:white;border:1px solid #cfd8dc;
  border-radius:6px;padding:10px 14px;min-width:230px}
.tile .k{font-size:12px;color:#546e7a} .tile .v{font-size:18px;font-weight:600;margin:3px 0}
.tile .s{font-size:13px;color:#2e7d32}
.plots{display:flex;flex-wrap:wrap;gap:12px} img.plot{background:white;border:1px solid #cfd8dc;
  max-width:100%;height:auto}
.cards{display:flex;flex-wrap:wrap;gap:12px} .card{background:white;border:1px solid #cfd8dc;
  border-radius:6px;padding:10px 12px} .card.blessed{border:2px solid #f9a825}
.card.fail{border-color:#e57373}
.small{font-size:12px} p.fail,span.fail{color:#b71c1c}
.graph{background:white;border:1px solid #cfd8dc;border-radius:6px;max-width:100%;height:auto}
table.steps td.bar{width:260px} table.steps td.bar span{display:block;height:10px;
  border-radius:3px;opacity:.7}
ul.warnings li{font-size:12.5px;color:#6d4c41;margin:3px 0}
.legend span{display:inline-block;margin-right:14px;font-size:12px}
.legend i{display:inline-block;width:12px;height:12px;border-radius:3px;margin-right:4px;
  vertical-align:-1px}
"""


def render_html(summary: dict, plots: dict[str, str]) -> str:
    """The report page (self-contained: inline CSS and SVG, PNGs as data URIs, no script)."""

    def img(name, alt):
        if name not in plots:
            return f"<p class='small'>No data for this plot ({_e(alt)}).</p>"
        return f"<img class='plot' id='plot-{name}' alt='{_e(alt)}' src='{plots[name]}'>"

    legend = "".join(
        f"<span><i style='background:{fill};border:1.5px solid {stroke}'></i>{_e(state.lower())}"
        "</span>"
        for state, (fill, stroke) in STATE_COLOURS.items()
        if state in {s["state"] for s in summary["steps"]}
    )
    gate = summary.get("gate") or {}
    warnings = gate.get("warnings") or []
    body = [
        f"<h1>tfx-optimize run report: {_e(summary['pipeline_name'])}</h1>",
        f"<div class='meta'>run {_e(summary['run_id'])} &middot; outputs in "
        f"{_e(summary['output_dir'])} &middot; {len(summary['steps'])} steps, "
        f"{_e(_duration(summary['total_step_time_s']))} of step time &middot; report written "
        f"{_e(summary['generated_at'])}</div>",
        _headline(summary),
        "<h2>Pipeline</h2>",
        graph_svg(summary["steps"]),
        f"<div class='legend'>{legend}</div>",
        _steps_table(summary),
    ]
    if summary["models"]:
        extra = ""
        if gate:
            extra = (
                f" Accuracy on {_e(gate.get('eval_examples'))} eval examples; latency measured "
                "by the Evaluator (batch 1, interleaved with the baseline); sizes of the judged "
                "flavour."
            )
        body += [
            "<h2>Trade-offs</h2>",
            "<p class='small'>Square: baseline; circle: passed every rule; cross: failed a rule; "
            "star: blessed. Dashed/dotted purple lines: the gate's thresholds; grey steps: the "
            f"Pareto front (nothing is both smaller/faster and more accurate).{extra}</p>",
            "<div class='plots'>",
            img("accuracy_vs_size", "accuracy vs size"),
            img("accuracy_vs_latency", "accuracy vs latency"),
            "</div>",
            "<h2>Candidates</h2>",
            _model_rows(summary),
        ]
    if gate:
        body += ["<h2>Gate: every rule per candidate</h2>", _gate_tables(summary)]
    if summary["models"]:
        body += [
            f"<h2>Where the parameters and the compute are: baseline vs "
            f"{_e(summary.get('chosen') or '-')}</h2>",
            img("per_layer", "per-layer parameter and FLOP shares"),
            "<h2>Latency distributions</h2>",
            "<p class='small'>Every timed batch-1 run of each model's TFLite flavour, as its "
            "Profiler measured it (one model at a time, after warm-up).</p>",
            img("latency_distribution", "latency distributions"),
        ]
    body += layer_report.costs_html(summary, img("layer_costs", "which layers cost the most"))
    body += layer_report.html_section(summary)
    body += ["<h2>Push</h2>", _push_html(summary.get("push"))]
    if warnings:
        body += [
            "<h2>Warnings</h2><ul class='warnings'>",
            *[f"<li>{_e(w)}</li>" for w in warnings],
            "</ul>",
        ]
    body.append(
        "<p class='small meta'>Numbers for machines: summary.json beside this file. Full "
        "records: each Profiler's profile.json, the Evaluator's evaluation.json, the Pusher's "
        "push.json under pipeline-root/.</p>"
    )
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>tfx-optimize report: {_e(summary['pipeline_name'])} {_e(summary['run_id'])}"
        f"</title><style>{_CSS}</style></head><body>" + "\n".join(body) + "</body></html>"
    )
