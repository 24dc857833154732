"""The run report's plots (matplotlib, Agg): PNGs as ``data:`` URIs for the HTML page.

Every function takes the summary :func:`pipelines.report.build.build_summary` returns (and its extras)
and gives a data URI, or None when the run has no data for that plot.
"""

from __future__ import annotations

import base64
import io

from components.common.numbers import BASELINE, finite, get_path

# The roles of points and bars in the plots.
PASS_COLOUR = "#2e7d32"
FAIL_COLOUR = "#c62828"
BASELINE_COLOUR = "#37474f"
BLESSED_COLOUR = "#f9a825"
THRESHOLD_COLOUR = "#8e24aa"


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=fig.dpi, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(width: float, height: float):
    # Figure + Agg canvas directly: no pyplot global state, no display backend needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _plain_log_axis(axis) -> None:
    """Log scale with plain-number ticks at 1-2-5 steps (log ticks alone read badly)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _place_labels(fig, ax, items: list[tuple[str, float, float]], fontsize: float = 9) -> None:
    """Annotates points with their names, moving a label when it would overlap another label
    or a marker (a handful of candidate positions around the point; good enough for <= 10)."""
    fig.canvas.draw()  # final limits and scales, so data -> pixel transforms hold
    char_w, text_h = 0.62 * fontsize * fig.dpi / 72, fontsize * fig.dpi / 72
    placed = []
    for _, x, y in items:
        px, py = ax.transData.transform((x, y))
        placed.append((px - 12, py - 12, px + 12, py + 12))  # the marker (a star is ~24 px)

    frame = ax.get_window_extent()

    def free(box, own):
        inside = (
            frame.x0 <= box[0] and box[2] <= frame.x1 and frame.y0 <= box[1] and box[3] <= frame.y1
        )
        return inside and not any(
            box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3]
            for i, b in enumerate(placed)
            if i != own  # a label sits beside its own marker, touching it is fine
        )

    for own, (name, x, y) in enumerate(items):
        px, py = ax.transData.transform((x, y))
        w = char_w * len(name)
        # Clear of the marker (a star reaches ~12 px out), right first, then left, above, below.
        offsets = [(13, 5), (13, -5 - text_h), (-13 - w, 5), (-13 - w, -5 - text_h)]
        offsets += [(-w / 2, 14), (-w / 2, -14 - text_h), (13, 5 + text_h), (13, -5 - 2 * text_h)]
        chosen = offsets[0]
        for dx, dy in offsets:
            if free((px + dx, py + dy, px + dx + w, py + dy + text_h), own):
                chosen = (dx, dy)
                break
        dx, dy = chosen
        placed.append((px + dx, py + dy, px + dx + w, py + dy + text_h))
        ax.annotate(
            name,
            (x, y),
            xytext=(dx, dy),
            textcoords="offset pixels",
            fontsize=fontsize,
            va="bottom",
            ha="left",
            zorder=5,
        )


def _tradeoff_plot(summary: dict, axis: str) -> str | None:
    models = summary["models"]
    task = summary.get("task") or {"label": "top-1 accuracy", "percent": True}
    unit = 100 if task["percent"] else 1
    points = {
        m["name"]: (get_path(m, "metrics", axis), get_path(m, "metrics", "score")) for m in models
    }
    points = {n: p for n, p in points.items() if finite(p[0]) and finite(p[1])}
    if len(points) < 2:
        return None
    scale = 1e3 if axis == "size_bytes" else 1.0
    gate = summary.get("gate") or {}
    rules = gate.get("rules") or {}
    if axis == "size_bytes":
        xlabel = f"size, {rules.get('size_measure', 'gzip')} (KB)"
        title = f"{task['label'].capitalize()} vs size"
    else:
        xlabel = f"batch-1 latency, {rules.get('latency_statistic', 'p95')} (ms)"
        title = f"{task['label'].capitalize()} vs latency"
    fig = _figure(6.4, 4.6)
    ax = fig.add_subplot()
    front = summary["pareto"][axis]
    fx = [points[n][0] / scale for n in front]
    fy = [unit * points[n][1] for n in front]
    ax.step(fx, fy, where="post", color="#90a4ae", lw=1.5, zorder=1)
    ax.scatter(
        fx,
        fy,
        s=260,
        facecolors="none",
        edgecolors="#90a4ae",
        linewidths=1.5,
        zorder=2,
        label="Pareto front",
    )
    by_name = {m["name"]: m for m in models}
    for name, (x, y) in points.items():
        model = by_name[name]
        if model["role"] == "baseline":
            style = dict(marker="s", color=BASELINE_COLOUR, s=70)
        elif model.get("passed_all"):
            style = dict(marker="o", color=PASS_COLOUR, s=60)
        elif "passed_all" in model:
            style = dict(marker="X", color=FAIL_COLOUR, s=70)
        else:
            style = dict(marker="o", color="#1565c0", s=60)
        ax.scatter([x / scale], [unit * y], zorder=3, edgecolors="white", linewidths=0.8, **style)
        if model.get("selected"):
            ax.scatter(
                [x / scale],
                [unit * y],
                marker="*",
                s=420,
                color=BLESSED_COLOUR,
                edgecolors="black",
                linewidths=0.8,
                zorder=4,
                label=f"blessed: {name}",
            )
    for line in (gate.get("thresholds") or {}).get(axis, []):
        ax.axvline(line["value"] / scale, color=THRESHOLD_COLOUR, ls="--", lw=1.2)
        ax.annotate(
            line["label"],
            (line["value"] / scale, 0.5),
            xycoords=("data", "axes fraction"),
            xytext=(-4, 0),
            textcoords="offset points",
            fontsize=8,
            color=THRESHOLD_COLOUR,
            rotation=90,
            ha="right",
            va="center",
        )
    for line in (gate.get("thresholds") or {}).get("accuracy", []):
        ax.axhline(100 * line["value"], color=THRESHOLD_COLOUR, ls=":", lw=1.2)
        ax.annotate(
            line["label"],
            (0, 100 * line["value"]),
            xycoords=("axes fraction", "data"),
            xytext=(4, 3),
            textcoords="offset points",
            fontsize=8,
            color=THRESHOLD_COLOUR,
        )
    xs = [p[0] / scale for p in points.values()]
    xs += [t["value"] / scale for t in (gate.get("thresholds") or {}).get(axis, [])]
    if min(xs) > 0 and max(xs) / min(xs) > 5:
        ax.set_xscale("log")
        _plain_log_axis(ax.xaxis)
        ax.set_xlim(min(xs) / 1.45, max(xs) * 1.35)
    else:
        span = (max(xs) - min(xs)) or max(xs) or 1.0
        ax.set_xlim(
            min(0.0, min(xs)) if min(xs) < 0 else max(0.0, min(xs) - 0.2 * span),
            max(xs) + 0.2 * span,
        )
    ys = [unit * p[1] for p in points.values()] + [
        100 * t["value"] for t in (gate.get("thresholds") or {}).get("accuracy", [])
    ]
    pad = max(0.5 if task["percent"] else 1e-3, 0.15 * (max(ys) - min(ys)))
    ax.set_ylim(min(ys) - pad, max(ys) + pad)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{task['label']}, eval split{' (%)' if task['percent'] else ''}")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8, framealpha=0.9)
    _place_labels(fig, ax, [(n, p[0] / scale, unit * p[1]) for n, p in points.items()])
    return _png(fig)


def _layer_plot(summary: dict, extras: dict) -> str | None:
    chosen = summary.get("chosen")
    base = (extras.get(BASELINE) or {}).get("per_layer")
    cand = (extras.get(chosen) or {}).get("per_layer") if chosen else None
    if base is None:
        return None
    import numpy as np

    names = [e["layer"] for e in base["layers"]]
    series = [("baseline", base, BASELINE_COLOUR)]
    if cand is not None:
        names += [e["layer"] for e in cand["layers"] if e["layer"] not in names]
        series.append((chosen, cand, BLESSED_COLOUR))
    fig = _figure(11, 0.45 * len(names) + 1.6)
    panels = (
        ("nonzero_parameters", "share of nonzero parameters"),
        ("flops", "share of FLOPs per example"),
    )
    y = np.arange(len(names))
    height = 0.8 / len(series)
    for col, (key, title) in enumerate(panels):
        ax = fig.add_subplot(1, 2, col + 1)
        for i, (label, data, colour) in enumerate(series):
            shares = {e["layer"]: e[f"{key}_share"] for e in data["layers"]}
            values = [100 * shares.get(n, 0.0) for n in names]
            total = data["totals"][key]
            ax.barh(
                y + (i - (len(series) - 1) / 2) * height,
                values,
                height=height,
                color=colour,
                label=f"{label} ({total:,} total)",
            )
        ax.set_yticks(y, names if col == 0 else [""] * len(names))
        ax.invert_yaxis()
        ax.set_xlabel("% of the model's total")
        ax.set_title(title)
        ax.grid(True, axis="x", alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return _png(fig)


def _latency_plot(summary: dict, extras: dict) -> str | None:
    import numpy as np

    series = [
        (m["name"], np.asarray(extras.get(m["name"], {}).get("latency_samples_ms") or []))
        for m in summary["models"]
    ]
    series = [(n, s) for n, s in series if s.size]
    if not series:
        return None
    colours = ["#37474f", "#1e88e5", "#43a047", "#fb8c00", "#8e24aa", "#e53935", "#00897b"]
    fig = _figure(11, 4.2)
    ecdf = fig.add_subplot(1, 2, 1)
    for i, (name, samples) in enumerate(series):
        x = np.sort(samples)
        ecdf.step(
            x,
            np.arange(1, x.size + 1) / x.size,
            where="post",
            color=colours[i % len(colours)],
            label=f"{name} (p50 {np.percentile(x, 50):.3f} ms)",
        )
    ecdf.set_xscale("log")
    _plain_log_axis(ecdf.xaxis)
    ecdf.set_xlabel("batch-1 TFLite latency (ms, log scale)")
    ecdf.set_ylabel("fraction of runs")
    ecdf.set_title("Cumulative distribution")
    for q in (0.5, 0.95, 0.99):
        ecdf.axhline(q, color="#bdbdbd", lw=0.8, ls=":")
    ecdf.grid(True, alpha=0.3)
    ecdf.legend(fontsize=8, loc="lower right")
    box = fig.add_subplot(1, 2, 2)
    # Drawn by hand (not Axes.boxplot): whiskers at p5/p95 and the tail marks are what matter.
    for i, (_, samples) in enumerate(series):
        p5, p25, p50, p75, p95, p99 = np.percentile(samples, [5, 25, 50, 75, 95, 99])
        colour = colours[i % len(colours)]
        box.plot([p5, p95], [i, i], color=colour, lw=1.2, zorder=1)
        box.barh(
            [i], [p75 - p25], left=[p25], height=0.5, color=colour, alpha=0.35, edgecolor=colour
        )
        box.plot([p50, p50], [i - 0.25, i + 0.25], color=colour, lw=2.2)
        box.scatter([p95], [i], marker="|", color="#c62828", s=160, zorder=3)
        box.scatter([p99], [i], marker="x", color="#c62828", s=40, zorder=3)
    box.set_yticks(range(len(series)), [n for n, _ in series])
    box.invert_yaxis()
    box.set_xscale("log")
    _plain_log_axis(box.xaxis)
    box.set_xlabel("ms, log scale: box p25-p75, line p5-p95, red | p95, x p99")
    box.set_title("Spread per model")
    box.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def _layer_cost_plot(summary: dict) -> str | None:
    """ "Which layers cost the most": one panel per step that measured its layers."""
    entries = summary.get("layer_costs") or []
    if not entries:
        return None
    import numpy as np

    rows = max(len(e["layers"]) for e in entries)
    fig = _figure(11, (0.32 * rows + 1.3) * len(entries) + 0.4)
    for i, entry in enumerate(entries):
        ax = fig.add_subplot(len(entries), 1, i + 1)
        names = [e["layer"] for e in entry["layers"]]
        values = [e["cost"] for e in entry["layers"]]
        y = np.arange(len(names))
        bars = ax.barh(y, values, color=BASELINE_COLOUR, height=0.7)
        for bar, layer in zip(bars, entry["layers"], strict=True):
            if layer["spared"]:
                bar.set_color(BLESSED_COLOUR)
                bar.set_hatch("//")
        ax.set_yticks(y, names)
        ax.invert_yaxis()
        ax.set_xlabel(entry["measure"])
        ax.set_title(entry["step"], fontsize=10)
        ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def make_plots(summary: dict, extras: dict) -> dict[str, str]:
    """name -> PNG data URI of every plot the run has data for."""
    plots = {
        "accuracy_vs_size": _tradeoff_plot(summary, "size_bytes"),
        "accuracy_vs_latency": _tradeoff_plot(summary, "latency_ms"),
        "per_layer": _layer_plot(summary, extras),
        "latency_distribution": _latency_plot(summary, extras),
        "layer_costs": _layer_cost_plot(summary),
    }
    return {k: v for k, v in plots.items() if v}
