"""The ``tfxopt report`` command: the HTML report and ``summary.json`` of a finished local run.

``pipelines.cli`` calls :func:`register` with its subparsers. Nothing heavy is imported here:
ML Metadata, TFX and matplotlib load inside the command, so ``tfxopt --help`` stays instant.
"""

from __future__ import annotations

import argparse


def _cmd_report(args) -> int:
    from pipelines.report.writer import write_report

    try:
        html_path, summary_path = write_report(
            args.run_output_dir, pipeline_name=args.pipeline_name, out=args.out
        )
    except LookupError as e:
        from components.common.errors import ConfigError

        raise ConfigError(str(e)) from None
    print(f"report:  {html_path}\nsummary: {summary_path}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds ``report`` to the ``tfxopt`` subcommands."""
    report = subparsers.add_parser(
        "report",
        help="write the HTML report (plots embedded) and summary.json of a finished run",
        description="Reads a run's ML Metadata and artifacts (the --output directory of "
        "`tfxopt run`) and writes a self-contained report.html and a summary.json beside it.",
    )
    report.add_argument(
        "run_output_dir", metavar="RUN_OUTPUT_DIR", help="the --output directory of `tfxopt run`"
    )
    report.add_argument(
        "--pipeline-name",
        help="which pipeline of the metadata store (default: the most recently run one)",
    )
    report.add_argument(
        "--out",
        help="the HTML file to write (default: RUN_OUTPUT_DIR/report.html); summary.json goes "
        "beside it",
    )
    report.set_defaults(func=_cmd_report)
