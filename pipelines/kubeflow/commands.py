"""The Kubeflow commands of ``tfxopt``: ``compile``, ``submit``, ``schedule`` and ``watch``.

``pipelines.cli`` calls :func:`register` with its subparsers. Nothing heavy is imported here: TFX,
TensorFlow and kfp load inside the commands, so ``tfxopt --help`` stays instant.
"""

from __future__ import annotations

import argparse
import os

DEFAULT_PACKAGE = "pipeline.yaml"


def load_configs(path: str | None):
    """(PipelineConfig, KubeflowConfig) from a YAML config file (None: defaults).

    Works whether or not PipelineConfig has its ``kubeflow`` field yet: when it does not, the
    ``kubeflow:`` section is split off and validated on its own.
    """
    from pipelines.config import PipelineConfig, load_config
    from pipelines.kubeflow.config import KubeflowConfig
    from pipelines.kubeflow.runner import kubeflow_settings

    if path is None or "kubeflow" in PipelineConfig.model_fields or not _has_kubeflow_section(path):
        config = load_config(path)
        return config, kubeflow_settings(config)
    import yaml

    from components.common.errors import ConfigError

    with open(path) as f:
        data = yaml.safe_load(f) or {}
    section = data.pop("kubeflow", None)
    try:
        config = PipelineConfig.parse(data)
        kubeflow = KubeflowConfig.parse(section or {}, where="kubeflow")
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    return config, kubeflow


TASKS = ("multiclass", "binary", "multilabel", "regression", "dense")


def configs_or_default(args):
    """(PipelineConfig, KubeflowConfig) of ``--config``, or of the default recipe for ``--task``
    (``pipelines/configs/default.yaml``, what ``tfxopt run`` runs without ``--config``)."""
    if args.config is not None:
        if getattr(args, "task", None) is not None:
            from components.common.errors import ConfigError

            raise ConfigError(
                "--task picks the default recipe's candidates and gate; with --config, set "
                "data.task in the config instead"
            )
        return load_configs(args.config)
    import sys

    from pipelines.config import DEFAULT_CONFIG, default_config
    from pipelines.kubeflow.runner import kubeflow_settings

    task = getattr(args, "task", None) or "multiclass"
    print(
        f"tfxopt: no --config: the default recipe ({os.path.relpath(DEFAULT_CONFIG)}) for task "
        f"{task} (--task names another)",
        file=sys.stderr,
    )
    config = default_config(task)
    return config, kubeflow_settings(config)


def _has_kubeflow_section(path: str) -> bool:
    import yaml

    if not os.path.isfile(path):
        return False  # load_config names the missing file
    with open(path) as f:
        try:
            data = yaml.safe_load(f)
        except yaml.YAMLError:
            return False  # load_config reports it
    return isinstance(data, dict) and "kubeflow" in data


def _cmd_compile(args) -> int:
    config, kubeflow = configs_or_default(args)
    output = args.output or (
        "pipeline.json" if kubeflow.output_format == "json" else DEFAULT_PACKAGE
    )
    from pipelines.kubeflow.runner import compile_pipeline

    compiled = compile_pipeline(
        config,
        output,
        image=args.image,
        output_format=args.format,
        pipeline_root=args.pipeline_root,
        examples_uri=args.examples,
        kubeflow=kubeflow,
    )
    target = "Kubeflow Pipelines" if compiled.output_format == "yaml" else "Vertex AI Pipelines"
    print(f"wrote {compiled.path} ({target}; {len(compiled.container_steps)} container steps)")
    for step in compiled.container_steps:
        settings = compiled.settings.get(step) or {}
        print(f"  {step}: {settings if settings else 'cluster defaults'}")
    return 0


def _parameters(args) -> dict:
    from pipelines.kubeflow.runner import EXAMPLES_URI_PARAMETER, MODEL_URI_PARAMETER

    return {MODEL_URI_PARAMETER: args.model, EXAMPLES_URI_PARAMETER: args.examples}


def _run_defaults(args):
    """Experiment and service account: flags first, then the config's kubeflow section."""
    _, kubeflow = load_configs(args.config) if args.config else (None, None)
    experiment = args.experiment or (kubeflow.experiment if kubeflow else "tfxopt")
    account = args.service_account or (kubeflow.service_account if kubeflow else None)
    return experiment, account


def _cmd_submit(args) -> int:
    from pipelines.kubeflow import client as kfp_client

    experiment, account = _run_defaults(args)
    submission = kfp_client.submit(
        args.package,
        _parameters(args),
        host=args.host,
        pipeline_root=args.pipeline_root,
        experiment=experiment,
        run_name=args.run_name,
        namespace=args.namespace,
        service_account=account,
        enable_caching=False if args.no_cache else None,
    )
    print(f"submitted run {submission.id} ({submission.name}): {submission.url}")
    return 0


def _cmd_schedule(args) -> int:
    from pipelines.kubeflow import client as kfp_client

    experiment, account = _run_defaults(args)
    submission = kfp_client.schedule(
        args.package,
        _parameters(args),
        cron=args.cron,
        interval=args.every,
        host=args.host,
        pipeline_root=args.pipeline_root,
        experiment=experiment,
        name=args.name,
        namespace=args.namespace,
        service_account=account,
        enable_caching=False if args.no_cache else None,
        max_concurrency=args.max_concurrency,
        catchup=args.catchup,
    )
    print(f"created recurring run {submission.id} ({submission.name}): {submission.url}")
    return 0


def _cmd_watch(args) -> int:
    from components.common.errors import ConfigError
    from pipelines import watcher

    state = watcher.StateStore(args.state_dir)
    if args.submitter == "local":
        if not args.examples:
            raise ConfigError("watch --submitter local needs --examples (the Examples directory).")
        # Without --config, each checkpoint gets the default recipe of its own task, as `run`.
        config = configs_or_default(args)[0] if args.config or args.task else None
        submitter = watcher.LocalSubmitter(config, os.path.abspath(args.examples), args.output)
    else:
        package = args.package
        if package is None:
            # Compile once at start, so the watcher always submits the config it was given.
            config, kubeflow = configs_or_default(args)
            from pipelines.kubeflow.runner import compile_pipeline

            package = os.path.join(state.state_dir, "pipeline.yaml")
            compile_pipeline(config, package, kubeflow=kubeflow)
        experiment, account = _run_defaults(args)
        submitter = watcher.KfpSubmitter(
            package,
            host=args.host,
            examples_uri=args.examples,
            pipeline_root=args.pipeline_root,
            experiment=experiment,
            namespace=args.namespace,
            service_account=account,
        )
    watch = watcher.Watcher(
        args.checkpoints,
        submitter,
        state,
        marker=args.marker,
        stable_seconds=args.stable_seconds,
        judge_by_mtime=args.once,
    )
    print(
        f"tfxopt: watching {args.checkpoints} ({args.submitter} runs; state in {state.state_dir})",
        flush=True,
    )
    submitted = watch.run(poll_seconds=args.poll_seconds, max_polls=1 if args.once else None)
    for record in submitted:
        print(f"submitted {record['checkpoint']}: run {record['run_id']}")
    return 0


def _add_kfp_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host", help="KFP endpoint, e.g. http://localhost:8080 (default $KFP_HOST)"
    )
    parser.add_argument("--namespace", help="KFP namespace (multi-user; default $KFP_NAMESPACE)")
    parser.add_argument("--pipeline-root", help="run's pipeline root (default: the package's)")
    parser.add_argument("--experiment", help="KFP experiment (default: config's, else tfxopt)")
    parser.add_argument("--service-account", help="Kubernetes service account of the run's pods")
    parser.add_argument("--config", help="pipeline YAML config (kubeflow: defaults)")


def _add_run_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--package", default=DEFAULT_PACKAGE, help="compiled package (tfxopt compile)"
    )
    parser.add_argument("--model", help="checkpoint URI: the model_uri runtime parameter")
    parser.add_argument("--examples", help="Examples URI (default: the package's examples_uri)")
    parser.add_argument("--no-cache", action="store_true", help="disable step caching for the run")
    _add_kfp_flags(parser)


def register(subparsers) -> None:
    """Adds ``compile``, ``submit``, ``schedule`` and ``watch`` to ``tfxopt``'s subcommands."""
    compile_ = subparsers.add_parser(
        "compile", help="compile the pipeline for Kubeflow Pipelines (YAML) or Vertex AI (JSON)"
    )
    compile_.add_argument(
        "--config",
        help="pipeline YAML config (default: the default recipe, pipelines/configs/default.yaml)",
    )
    compile_.add_argument(
        "--task", choices=TASKS, help="without --config: the default recipe's task (multiclass)"
    )
    compile_.add_argument(
        "--output", help="package file: *.yaml for KFP, *.json for Vertex (default pipeline.yaml)"
    )
    compile_.add_argument("--format", choices=("yaml", "json"), help="must match --output")
    compile_.add_argument("--image", help="component image (default: kubeflow.image)")
    compile_.add_argument("--pipeline-root", help="default pipeline root written to the package")
    compile_.add_argument("--examples", help="default of the examples_uri runtime parameter")
    compile_.set_defaults(func=_cmd_compile)

    submit = subparsers.add_parser("submit", help="start one Kubeflow Pipelines run")
    _add_run_flags(submit)
    submit.add_argument("--run-name", help="display name of the run")
    submit.set_defaults(func=_cmd_submit)

    schedule = subparsers.add_parser(
        "schedule", help="create a recurring Kubeflow Pipelines run (cron or interval)"
    )
    _add_run_flags(schedule)
    when = schedule.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", help="'min hour day month weekday', e.g. '0 3 * * *'")
    when.add_argument("--every", help="interval: seconds, or 90s, 15m, 6h, 1d")
    schedule.add_argument("--name", help="name of the recurring run")
    schedule.add_argument("--max-concurrency", type=int, default=1, help="parallel runs (1)")
    schedule.add_argument(
        "--catchup", action="store_true", help="backfill intervals missed while paused"
    )
    schedule.set_defaults(func=_cmd_schedule)

    watch = subparsers.add_parser(
        "watch", help="submit one run per new complete checkpoint under a prefix"
    )
    watch.add_argument(
        "--checkpoints", required=True, help="prefix whose subdirectories are SavedModels"
    )
    watch.add_argument(
        "--submitter", choices=("local", "kfp"), default="local", help="where runs go (local)"
    )
    watch.add_argument(
        "--state-dir", default=".tfxopt-watch", help="local/mounted dir recording submissions"
    )
    watch.add_argument("--marker", help="file the trainer writes last (default: wait until stable)")
    watch.add_argument(
        "--stable-seconds", type=float, default=60.0, help="unchanged this long = complete (60)"
    )
    watch.add_argument("--poll-seconds", type=float, default=30.0, help="seconds between scans")
    watch.add_argument(
        "--once",
        action="store_true",
        help="scan once and exit (without --marker, a checkpoint whose newest file is older than "
        "--stable-seconds is complete)",
    )
    watch.add_argument("--examples", help="Examples URI for each run")
    watch.add_argument(
        "--output", default="tfxopt-watch-runs", help="local runs' output dirs (local submitter)"
    )
    watch.add_argument("--package", help="compiled package (kfp; default: compile --config)")
    watch.add_argument(
        "--task",
        choices=TASKS,
        help="without --config: the default recipe's task (kfp: multiclass; local: inferred "
        "per checkpoint, as `tfxopt run`)",
    )
    _add_kfp_flags(watch)
    watch.set_defaults(func=_cmd_watch)
