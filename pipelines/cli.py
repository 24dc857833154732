"""``tfxopt``: the command line of tfx-optimize.

Heavy imports (TensorFlow, TFX, Beam) happen inside the commands, so ``--help`` answers at once.

Exit statuses, the same for every command (CI relies on them): :mod:`pipelines.outcome`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys

from components.common import legacy_keras

legacy_keras.pin()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pipelines.outcome import (
    EXIT_BAD_INPUT,
    EXIT_NOT_BLESSED,
    EXIT_STATUSES,
    EXIT_STEP_FAILED,
    add_ci_flags,
    not_blessed_line,
    outcome_status,
    version,
)


def _cmd_example_data(args) -> int:
    from pipelines.reference_data import EPOCHS, write_reference_data

    facts = write_reference_data(args.out_dir, epochs=args.epochs or EPOCHS)
    print(
        f"wrote {facts['train_examples']} train / {facts['eval_examples']} eval examples to "
        f"{facts['examples']}\nwrote the baseline model ({facts['parameters']:,} parameters, eval "
        f"accuracy {facts['eval_accuracy']:.4f}) to {facts['model']}"
    )
    return 0


def _cmd_run(args) -> int:
    from pipelines.config import default_run_config, load_config, with_serving

    # Both fail fast, before TensorFlow loads.
    if args.config is not None:
        config = load_config(args.config)
        if args.label_key is not None:
            config = config.model_copy(
                update={"data": config.data.model_copy(update={"label_key": args.label_key})}
            )
        if args.serving is not None:
            config = with_serving(config, args.model, args.serving)
    else:
        config = default_run_config(args.model, args.serving, label_key=args.label_key)
    if args.task is not None:
        config = config.model_copy(
            update={"data": config.data.model_copy(update={"task": args.task})}
        )
    from pipelines.local.runner import run_local
    from pipelines.report import console

    label_line = task = None
    if args.config is None:
        config, task, label_line = _fit_default_recipe(config, args)
    print(f"tfxopt: running pipeline {config.pipeline_name!r} locally -> {args.output}", flush=True)
    if label_line:
        print(label_line, flush=True)
    if args.config is None:
        print(console.default_recipe_text(config, task.kind), flush=True)
    run = run_local(config, args.model, args.examples, args.output)
    print(console.render(run))
    from pipelines.report.writer import write_report

    html_path, summary_path = write_report(run)
    print(f"\nreport:  {html_path}\nsummary: {summary_path}")
    with open(summary_path) as f:
        args.summary = json.load(f)
    # A gate that rejects every candidate is a verdict (exit 0 unless --require-blessing); when no
    # candidate could even be built or measured, the run did not do its job: exit 1, after the
    # summary and the report.
    failed = console.all_candidates_failed(run)
    if failed:
        print(f"tfxopt: error: no candidate could be built: {failed}", file=sys.stderr)
    status = outcome_status(args.summary, args.require_blessing, all_failed=bool(failed))
    if status == EXIT_NOT_BLESSED:
        print(not_blessed_line(args.summary), file=sys.stderr)
        args.error = not_blessed_line(args.summary).removeprefix("tfxopt: error: ")
    return status


def _fit_default_recipe(config, args):
    """The default recipe for this model's task, once its label and task are known (nothing is
    written before): (the config, the task, the line saying which label was inferred, or None)."""
    from pipelines.config import default_config_for_task
    from pipelines.local import preflight

    label_key, task = preflight.task_for_default_recipe(
        config, args.model, args.examples, label_key_given=args.label_key is not None
    )
    line = None
    if label_key != config.data.label_key:
        line = (
            f"tfxopt: label: {label_key!r}, the one feature no model input takes (the Examples "
            f"have no {config.data.label_key!r}; --label-key names another)"
        )
        config = config.model_copy(
            update={"data": config.data.model_copy(update={"label_key": label_key})}
        )
    return default_config_for_task(config, task.kind), task, line


def _add_global_flags(parser: argparse.ArgumentParser, top: bool) -> None:
    # On the subcommands the default is SUPPRESS, so `tfxopt -v run` is not undone by run's own
    # default: the option works before or after the subcommand.
    default = {} if top else {"default": argparse.SUPPRESS}
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="show TFX and Beam logs", **default
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tfxopt",
        description="Profile, prune, cluster, quantize, distill, gate and push TensorFlow models "
        "with TFX.",
        epilog=EXIT_STATUSES,
    )
    parser.add_argument("--version", action="version", version=f"tfxopt {version()}")
    _add_global_flags(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run", help="run the pipeline locally (LocalDagRunner, SQLite MLMD)", epilog=EXIT_STATUSES
    )
    run.add_argument(
        "--model",
        required=True,
        help="the new checkpoint: a tf_keras SavedModel directory, or a Keras 3 .keras file (or a "
        "directory holding one)",
    )
    run.add_argument(
        "--examples", required=True, help="TFX Examples dir (Split-train/, Split-eval/)"
    )
    run.add_argument(
        "--config",
        help="pipeline YAML config (default: the default recipe, pipelines/configs/default.yaml)",
    )
    run.add_argument(
        "--label-key",
        metavar="KEY",
        help="the Examples feature holding the label (sets data.label_key; default: `label`, "
        "else the one feature no model input takes)",
    )
    run.add_argument(
        "--task",
        choices=["multiclass", "binary", "multilabel", "regression", "dense"],
        help="what the model predicts (sets data.task; default: inferred from the model's output "
        "and the label)",
    )
    run.add_argument("--output", default="tfxopt-output", help="pipeline root, metadata, reports")
    run.add_argument(
        "--serving",
        metavar="DIR",
        help="push the blessed model to this TF Serving repository (with --config: replaces the "
        "config's serving destinations, keeps its OTA ones; default: the config's, else nothing)",
    )
    add_ci_flags(run)
    run.set_defaults(func=_cmd_run)

    data = sub.add_parser(
        "example-data", help="write the reference inputs: digits Examples and a baseline CNN"
    )
    data.add_argument("out_dir", help="directory to write examples/ and model/ into")
    data.add_argument(
        "--epochs",
        type=int,
        help="training epochs of the baseline (default: the reference recipe's)",
    )
    data.set_defaults(func=_cmd_example_data)

    # Shipping (promote, rollback, ota-check, ota-keygen) and Kubeflow (compile, submit,
    # schedule, watch) commands; their modules import nothing heavy.
    from components.pusher import commands as push_commands
    from pipelines.kubeflow import commands as kubeflow_commands
    from pipelines.report import commands as report_commands

    report_commands.register(sub)
    push_commands.register(sub)
    kubeflow_commands.register(sub)
    for command in sub.choices.values():
        _add_global_flags(command, top=False)
    return parser


def _quiet_logs() -> None:
    import warnings

    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)
    # Google's client libraries (imported by TFX) warn about Python 3.10 on every import;
    # Python 3.10 is what TFX 1.16 supports, so the warning says nothing actionable here.
    warnings.filterwarnings(
        "ignore", message="You are using a non-supported Python version", category=FutureWarning
    )
    # TFX 1.16's channel resolver warns "...Query.property_predicate is not supported." on
    # every input resolution: it tests a protobuf sub-message for truth, which is always true.
    logging.getLogger("absl").addFilter(
        lambda record: not record.getMessage().endswith("property_predicate is not supported.")
    )


def _run_command(args) -> int:
    """The command's exit status; errors become one ``tfxopt: error:`` line and their status."""
    from components.common.errors import StepFailed, TfxOptError

    try:
        return args.func(args)
    except TfxOptError as e:
        args.error = str(e)
        print(f"tfxopt: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except StepFailed as e:  # one line for the user; the traceback in a file, or with -v
        args.error = str(e)
        if args.verbose:
            import traceback

            traceback.print_exception(type(e.__cause__), e.__cause__, e.__cause__.__traceback__)
        print(f"tfxopt: error: {e}", file=sys.stderr)
        if e.log_path:
            print(
                f"tfxopt: traceback and details: {e.log_path} (-v prints it); run the same "
                "command again to resume: finished steps are reused from the cache",
                file=sys.stderr,
            )
        return EXIT_STEP_FAILED


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.verbose = getattr(args, "verbose", False)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s"
    )
    if not args.verbose:
        _quiet_logs()
    args.summary = args.error = None
    if not getattr(args, "json", False):
        return _run_command(args)
    # --json: stdout carries one JSON document and nothing else; what the command prints goes
    # to stderr with the logs.
    stdout = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):
        status = _run_command(args)
    document = {**(args.summary or {}), "exit_status": status}
    if args.error:
        document["error"] = args.error
    stdout.write(json.dumps(document, default=str) + "\n")
    stdout.flush()
    return status


if __name__ == "__main__":
    sys.exit(main())
