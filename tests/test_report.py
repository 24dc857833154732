"""The run report: built from a real small run, checked in headless Chromium; progress lines.

One module-scoped local run on the reference inputs (prune 50% for one epoch -> float32 and
dynamic-range candidates -> candidate profiles -> the gate -> a serving and OTA push) feeds the
report tests. The float32 candidate fails the compression rule, dynamic_range is blessed.

The browser check needs Debian's ``chromium`` (``scripts/install_chromium.sh``); set
TFXOPT_NO_BROWSER=1 to skip it on a machine without one.
"""

import base64
import io
import json
import logging
import os

import pytest

from pipelines.config import PipelineConfig
from tests.small_inputs import CANARY_PUSHER

pytestmark = pytest.mark.e2e


def _config():
    return PipelineConfig.parse(
        {
            "pipeline_name": "report-test",
            "profiler": {
                "warmup_runs": 5,
                "timed_runs": 60,
                "throughput_runs": 2,
                "measure_memory": False,
            },
            "pruner": {
                "target_sparsity": 0.5,
                "layers": {"exclude_names": ["conv1"]},
                "fine_tuning": {"epochs": 1},
            },
            "quantization": [{"mode": "none", "name": "float32"}, {"mode": "dynamic_range"}],
            "evaluator": {
                "objective": "smallest",
                "rules": {"max_accuracy_drop_points": 2.0, "min_compression_ratio": 3.0},
                "latency": {"timed_runs": 60},
            },
            "pusher": CANARY_PUSHER,
        }
    )


@pytest.fixture(scope="module")
def report_run(tmp_path_factory, reference_data):
    """A finished local run and its report: (LocalRun, html path, summary dict)."""
    from components.pusher import signing
    from pipelines.local.runner import run_local
    from pipelines.report import writer

    out = tmp_path_factory.mktemp("report") / "out"
    signing.write_keypair(str(out / "keys" / "ota.pem"))
    run = run_local(_config(), reference_data["model"], reference_data["examples"], str(out))
    html_path, summary_path = writer.write_report(run)
    with open(summary_path) as f:
        summary = json.load(f)
    return run, html_path, summary


def _evaluation(run):
    from pipelines.report import console

    return console.evaluation_record(run)


def test_summary_holds_the_runs_numbers(report_run):
    run, html_path, summary = report_run
    evaluation = _evaluation(run)
    assert summary["format"] == "tfxopt.run_report/v1"
    assert os.path.dirname(html_path) == run.output_dir
    assert [s["node_id"] for s in summary["steps"]] == [s.node_id for s in run.steps]
    assert all(s["state"] == "COMPLETE" for s in summary["steps"])
    by_node = {s["node_id"]: s for s in summary["steps"]}
    # The graph comes from the artifacts' lineage in ML Metadata.
    assert set(by_node["Evaluator"]["upstream"]) >= {
        "ModelImporter",
        "ExampleGen",
        "BaselineProfiler",
        "Quantizer_float32",
        "Quantizer_dynamic_range",
        "Profiler_float32",
        "Profiler_dynamic_range",
    }
    assert by_node["Quantizer_float32"]["upstream"] == ["ExampleGen", "Pruner"]
    assert by_node["Pusher"]["upstream"] == ["Evaluator"]
    assert by_node["Pruner"]["duration_s"] > 1.0

    models = {m["name"]: m for m in summary["models"]}
    assert list(models) == ["baseline", "float32", "dynamic_range"]
    for cand in evaluation["candidates"]:
        row = models[cand["name"]]
        assert row["accuracy"] == cand["metrics"]["top1_accuracy"]
        assert row["size"]["gzip_bytes"] == cand["size"]["gzip_bytes"]
        assert row["latency_ms"]["p95_ms"] == cand["latency_used"]["p95_ms"]
        assert [r["passed"] for r in row["rules"]] == [r["passed"] for r in cand["rules"]]
        assert row["stages"] == ["Pruner", f"Quantizer_{cand['name']}"]
        assert row["kernel_sparsity"] == pytest.approx(0.5, abs=0.03)
        assert row["profiler"] == f"Profiler_{cand['name']}"
    assert models["float32"]["passed_all"] is False
    assert models["dynamic_range"]["selected"] is True
    assert models["dynamic_range"]["quantization_mode"] == "dynamic_range"
    assert "int8" in models["dynamic_range"]["tflite_weight_dtypes"]
    assert summary["gate"]["selected"] == evaluation["decision"]["selected"] == "dynamic_range"

    # Thresholds on the plots' axes: 3x compression of the baseline's gzip size, a 2-point drop.
    base = models["baseline"]
    lines = summary["gate"]["thresholds"]
    assert lines["size_bytes"][0]["value"] == pytest.approx(base["metrics"]["size_bytes"] / 3)
    assert lines["accuracy"][0]["value"] == pytest.approx(base["accuracy"] - 0.02)
    assert "dynamic_range" in summary["pareto"]["size_bytes"]
    assert "float32" not in summary["pareto"]["size_bytes"]  # same accuracy, bigger

    push = summary["push"]
    assert push["pushed"] is True
    assert push["serving"][0]["version"] == 1
    assert push["ota"][0]["channel"] == "canary"
    assert push["ota"][0]["manifest_sequence"] == 1
    assert sorted(summary["plots"]) == [
        "accuracy_vs_latency",
        "accuracy_vs_size",
        "latency_distribution",
        "per_layer",
    ]


def test_html_is_self_contained_with_decodable_plots(report_run):
    from PIL import Image

    _, html_path, summary = report_run
    with open(html_path, encoding="utf-8") as f:
        page = f.read()
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in page and "<script" not in page
    for text in ("BLESSED", "dynamic_range", "min_compression_ratio", "FAIL", "canary"):
        assert text in page
    uris = [part.split("'")[0] for part in page.split("src='data:image/png;base64,")[1:]]
    assert len(uris) == 4
    for uri in uris:
        image = Image.open(io.BytesIO(base64.b64decode(uri)))
        assert image.format == "PNG" and image.width > 400 and image.height > 250
    assert page.count('<g class="node"') == len(summary["steps"])


def test_report_opens_in_headless_chromium(report_run, tmp_path):
    from PIL import Image

    from tests import browser

    if browser.chromium() is None:
        if os.environ.get("TFXOPT_NO_BROWSER") == "1":
            pytest.skip("TFXOPT_NO_BROWSER=1 and no chromium")
        pytest.fail("chromium is not installed: run scripts/install_chromium.sh (Debian package)")
    _, html_path, summary = report_run
    seen = browser.inspect_page(html_path)
    assert seen["errors"] == [] and seen["console"] == []
    assert len(seen["images"]) == 4
    for image in seen["images"]:
        assert image["complete"] and image["width"] > 400 and image["height"] > 250, image
    assert seen["graph_nodes"] == len(summary["steps"])

    shot = tmp_path / "report.png"
    console = browser.screenshot(html_path, str(shot), height=min(seen["scroll_height"], 6000))
    assert console == []
    with Image.open(shot) as image:
        assert image.size == (1400, min(seen["scroll_height"], 6000))
        # Rendered, not blank: the plots and tables put thousands of distinct colours on it.
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 20)) > 1000
    target = os.environ.get("TFXOPT_REPORT_SCREENSHOT")
    if target:
        shot.replace(target)


def test_browser_probe_sees_broken_images_and_errors(tmp_path):
    from tests import browser

    if browser.chromium() is None:
        pytest.skip("no chromium (the report test above fails instead)")
    page = tmp_path / "bad.html"
    page.write_text(
        "<html><head><title>bad</title></head><body><img id='gone' src='missing.png'>"
        "<script>console.error('boom'); undefinedFunction();</script></body></html>"
    )
    seen = browser.inspect_page(str(page))
    assert seen["images"][0]["width"] == 0
    assert any("console.error: boom" in e for e in seen["errors"])
    assert any("undefinedFunction" in e for e in seen["errors"])
    assert any("missing.png" in e for e in seen["errors"])


def test_report_command_writes_where_asked(report_run, tmp_path, capsys):
    import argparse

    from pipelines.report import commands as report_commands

    run, _, _ = report_run
    parser = argparse.ArgumentParser()
    report_commands.register(parser.add_subparsers(dest="command"))
    out = tmp_path / "elsewhere" / "r.html"
    args = parser.parse_args(["report", run.output_dir, "--out", str(out)])
    assert args.func(args) == 0
    assert out.exists() and (tmp_path / "elsewhere" / "summary.json").exists()
    assert str(out) in capsys.readouterr().out
    summary = json.loads((tmp_path / "elsewhere" / "summary.json").read_text())
    assert summary["pipeline_name"] == "report-test"
    assert summary["run_id"] == run.run_id


def test_report_command_names_a_missing_store(tmp_path):
    from components.common.errors import ConfigError
    from pipelines.report.writer import write_report

    with pytest.raises(ConfigError, match="metadata.sqlite"):
        write_report(str(tmp_path))


def test_delegation_per_model_and_a_line_for_a_graph_that_falls_back(report_run):
    from pipelines.report import console
    from pipelines.report.page import render_html

    run, html_path, summary = report_run
    for model in summary["models"]:
        delegation = model["delegation"]  # from its Profiler, measured in LiteRT
        assert 0 < delegation["delegated_share"] <= 1, model["name"]
        assert delegation["delegated_nodes"] <= delegation["nodes"]
        assert (delegation["reason"] is None) == (delegation["fallback_ops"] == {})
        assert model["multi_thread_latency_ms"] is None or (
            model["multi_thread_latency_ms"]["num_threads"] > 1
        )
    with open(html_path, encoding="utf-8") as f:
        assert "XNNPACK delegated" in f.read()
    assert "XNNPACK delegated" in console.render(run)

    # A model whose graph falls back (a dynamic batch) gets a line: which ops and why.
    fallback = {
        "delegated_share": 9 / 13,
        "delegated_nodes": 9,
        "nodes": 13,
        "partitions": 1,
        "fallback_ops": {"PACK": 1, "RESHAPE": 1, "SHAPE": 1, "STRIDED_SLICE": 1},
        "reason": "PACK x1, RESHAPE x1, SHAPE x1, STRIDED_SLICE x1 compute a shape at run time",
    }
    models = [
        dict(m, delegation=fallback) if m["name"] == "float32" else m for m in summary["models"]
    ]
    page = render_html(dict(summary, models=models), {})
    assert "69% (9/13 nodes, 1 partition)" in page
    assert "<li><b>float32</b>: PACK x1, RESHAPE x1, SHAPE x1, STRIDED_SLICE x1 compute" in page
    profiles = {"Profiler_float32": {"delegation": fallback}, "BaselineProfiler": {}}
    assert console.fallback_lines(profiles) == [f"Profiler_float32: {fallback['reason']}"]


def test_not_blessed_and_failed_runs_render(report_run):
    from pipelines.report.page import render_html

    _, _, summary = report_run
    gate = dict(summary["gate"], blessed=False, selected=None, reason="no candidate passed")
    models = [dict(m, selected=False) for m in summary["models"]]
    steps = [dict(s) for s in summary["steps"]]
    steps[-1]["state"] = "FAILED"
    broken = dict(summary, gate=gate, models=models, steps=steps, failed_steps=["Pusher"])
    broken["push"] = {"pushed": False, "reason": "not blessed", "serving": [], "ota": []}
    broken["chosen"] = "float32"
    page = render_html(broken, {})
    assert "NOT BLESSED" in page and "no candidate passed" in page
    assert "Run failed at Pusher" in page and "Nothing was pushed" in page
    assert 'data-state="FAILED"' in page


# --------------------------------------------------------------------------- pure pieces


def test_pareto_front_keeps_only_undominated_points():
    from components.common.numbers import pareto_front

    points = {
        "baseline": (300.0, 0.98),
        "a": (30.0, 0.97),
        "b": (40.0, 0.97),  # a is smaller at the same accuracy
        "c": (100.0, 0.985),
        "d": (20.0, 0.90),
        "nan": (float("nan"), 0.99),
    }
    assert pareto_front(points) == ["d", "a", "c"]


def test_graph_layout_columns_follow_the_longest_path():
    from pipelines.report.page import graph_layout, graph_svg

    steps = [
        {"node_id": "Importer", "upstream": [], "state": "COMPLETE", "duration_s": 0.1},
        {"node_id": "Gen", "upstream": [], "state": "CACHED", "duration_s": 1.0},
        {"node_id": "Prune", "upstream": ["Importer", "Gen"], "state": "COMPLETE", "duration_s": 3},
        {"node_id": "Q_a", "upstream": ["Prune", "Gen"], "state": "COMPLETE", "duration_s": 5},
        {"node_id": "Q_b", "upstream": ["Prune"], "state": "FAILED", "duration_s": 65},
        {
            "node_id": "Eval",
            "upstream": ["Q_a", "Q_b", "Importer"],
            "state": "NEW",
            "duration_s": 0,
        },
    ]
    layout = graph_layout(steps)
    assert {n: col for n, (col, _) in layout.items()} == {
        "Importer": 0,
        "Gen": 0,
        "Prune": 1,
        "Q_a": 2,
        "Q_b": 2,
        "Eval": 3,
    }
    assert len({layout["Q_a"], layout["Q_b"]}) == 2
    svg = graph_svg(steps)
    assert svg.count("marker-end=") == 8  # one arrow per edge
    assert "1 min 05 s" in svg and 'data-state="FAILED"' in svg


# --------------------------------------------------------------------------- progress


def _emit(messages):
    from absl import logging as absl_logging

    for message, *args in messages:
        absl_logging.info(message, *args)


def test_progress_prints_each_step_and_its_duration(capsys):
    from absl import logging as absl_logging

    from pipelines.local import progress

    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.WARNING)
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    keep = Keep()
    logging.getLogger().addHandler(keep)
    out = io.StringIO()
    try:
        with progress.report_progress(total=3, stream=out, heartbeat_s=None) as handler:
            _emit(
                [
                    ("Component %s is running.", "ExampleGen"),
                    ("Component %s is finished.", "ExampleGen"),
                    ("Component %s is running.", "Pruner"),
                ]
            )
            # What TensorFlow does around every SavedModel save (trackable/autotrackable.py):
            # save the absl verbosity, silence it, put it back. The progress lines must survive.
            saved = absl_logging.get_verbosity()
            absl_logging.set_verbosity(absl_logging.FATAL)
            absl_logging.set_verbosity(saved)
            _emit(
                [
                    ("A cached execution %d is used.", 7),
                    ("Component %s is finished.", "Pruner"),
                    ("Component %s is running.", "Evaluator"),
                ]
            )
            absl_logging.warning("a warning still shows")
            _emit([("Component %s is finished.", "Evaluator")])
    finally:
        logging.getLogger().removeHandler(keep)
        absl_logging.set_verbosity(verbosity)
    lines = out.getvalue().splitlines()
    assert lines[0] == "[1/3] ExampleGen ..."
    assert lines[1].startswith("[1/3] ExampleGen done in ") and lines[1].endswith(" s")
    assert lines[3].startswith("[2/3] Pruner cached (")
    assert lines[5].startswith("[3/3] Evaluator done in ")
    assert lines[6].startswith("3 steps (1 cached) in ")
    assert [s.state for s in handler.state.steps] == ["done", "cached", "done"]
    # INFO lines stay hidden as before; warnings reach the usual handlers.
    assert records == ["a warning still shows"]
    assert logging.getLogger("absl").level == logging.WARNING


def test_progress_reports_the_failing_step_and_heartbeats():
    import time

    from pipelines.local import progress

    out = io.StringIO()
    with pytest.raises(RuntimeError):
        with progress.report_progress(total=2, stream=out, heartbeat_s=0.05):
            _emit([("Component %s is running.", "Trainer")])
            time.sleep(0.2)
            raise RuntimeError("executor failed")
    text = out.getvalue()
    assert "Trainer still running (" in text
    assert "[1/2] Trainer FAILED after " in text
