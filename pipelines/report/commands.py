"""The ``tfxopt report`` command: the HTML report and ``summary.json`` of any finished run.

A local run is read from its ``--output`` directory (its newest run, or ``--run-id``); a Kubeflow
run from KFP's ML Metadata and its pipeline root (``--kubeflow RUN_ID --metadata ...``).
``pipelines.cli`` calls :func:`register` with its subparsers. Nothing heavy is imported here:
ML Metadata, TFX and matplotlib load inside the command, so ``tfxopt --help`` stays instant.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def _cmd_report(args) -> int:
    from components.common.errors import ConfigError
    from pipelines.outcome import EXIT_NOT_BLESSED, not_blessed_line, outcome_status
    from pipelines.report.writer import write_report

    if args.kubeflow:
        if args.run_output_dir or args.run_id:
            raise ConfigError(
                "report --kubeflow RUN_ID reads KFP's metadata: give no RUN_OUTPUT_DIR or --run-id"
            )
        if not args.metadata:
            raise ConfigError(
                "report --kubeflow needs --metadata: grpc://HOST:PORT of KFP's "
                "metadata-grpc-service (kubectl -n kubeflow port-forward "
                "svc/metadata-grpc-service 8081:8080), or a SQLite file"
            )
        from pipelines.metadata.kfp import load_kfp_run

        out = args.out or os.path.join(f"tfxopt-report-{args.kubeflow}", "report.html")
        run = load_kfp_run(args.metadata, args.kubeflow, local_root=args.pipeline_root)
    else:
        if not args.run_output_dir:
            raise ConfigError(
                "report: give the --output directory of a `tfxopt run`, or --kubeflow RUN_ID"
            )
        run, out = args.run_output_dir, args.out
    try:
        html_path, summary_path = write_report(
            run, pipeline_name=args.pipeline_name, out=out, run_id=args.run_id
        )
    except LookupError as e:
        raise ConfigError(str(e)) from None
    print(f"report:  {html_path}\nsummary: {summary_path}")
    with open(summary_path) as f:
        args.summary = json.load(f)
    status = outcome_status(args.summary, args.require_blessing)
    if status == EXIT_NOT_BLESSED:
        args.error = not_blessed_line(args.summary).removeprefix("tfxopt: error: ")
        print(not_blessed_line(args.summary), file=sys.stderr)
    return status


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds ``report`` to the ``tfxopt`` subcommands."""
    from pipelines.outcome import EXIT_STATUSES, add_ci_flags

    report = subparsers.add_parser(
        "report",
        help="write the HTML report (plots embedded) and summary.json of a finished run",
        description="Reads a run's ML Metadata and artifacts (the --output directory of "
        "`tfxopt run`, or a Kubeflow run's metadata and pipeline root) and writes a "
        "self-contained report.html and a summary.json beside it.",
        epilog=EXIT_STATUSES,
    )
    report.add_argument(
        "run_output_dir",
        metavar="RUN_OUTPUT_DIR",
        nargs="?",
        help="the --output directory of `tfxopt run`",
    )
    report.add_argument(
        "--run-id",
        help="which run of that directory (the run id the summary and report show; default: "
        "the newest)",
    )
    report.add_argument(
        "--pipeline-name",
        help="which pipeline of the metadata store (default: the run's, else the most recently "
        "run one)",
    )
    report.add_argument(
        "--kubeflow",
        metavar="RUN_ID",
        help="a Kubeflow Pipelines run (the id `tfxopt submit` printed), read from --metadata",
    )
    report.add_argument(
        "--metadata",
        help="with --kubeflow: KFP's ML Metadata, grpc://HOST:PORT (metadata-grpc-service) or a "
        "SQLite file",
    )
    report.add_argument(
        "--pipeline-root",
        metavar="DIR",
        help="with --kubeflow: a local copy of the run's pipeline root (e.g. gsutil -m rsync -r "
        "gs://ROOT/PIPELINE/RUN_ID DIR); default: read the recorded URIs as paths",
    )
    report.add_argument(
        "--out",
        help="the HTML file to write (default: RUN_OUTPUT_DIR/report.html, or "
        "tfxopt-report-RUN_ID/report.html for --kubeflow); summary.json goes beside it",
    )
    add_ci_flags(report)
    report.set_defaults(func=_cmd_report)
