"""Submits compiled packages to Kubeflow Pipelines with ``kfp.Client``: one run, or a recurring run.

Before anything contacts the cluster, the package is loaded with kfp's own loader and the run's
parameters are checked against it, so a bad package or a missing ``model_uri`` fails at once. The
host comes from ``--host`` or ``KFP_HOST`` and is probed (``/apis/v2beta1/healthz``) with a short
timeout, so an unreachable host is one clear error rather than kfp's minute of retries.

Credentials follow kfp's usual mechanisms: inside a cluster, the projected service-account token at
``KF_PIPELINES_SA_TOKEN_PATH`` (default ``/var/run/secrets/kubeflow/pipelines/token``) when present;
IAP / OAuth client ids from kfp's ``KF_PIPELINES_*`` environment variables; the namespace from
``--namespace``, ``KFP_NAMESPACE`` or kfp's context file.
"""

from __future__ import annotations

import datetime
import os
import re
from dataclasses import dataclass

from components.common.errors import ConfigError, TfxOptError

HOST_ENV = "KFP_HOST"
NAMESPACE_ENV = "KFP_NAMESPACE"
HEALTHZ_PATH = "/apis/v2beta1/healthz"
_CRON_FIELD = re.compile(r"^[0-9A-Za-z*/,?#LW-]+$")
_INTERVAL = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
_FLAGS = {"model_uri": "--model", "examples_uri": "--examples"}  # tfxopt submit/schedule flags
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class KfpError(TfxOptError):
    """Kubeflow Pipelines could not be reached, or refused a request."""


@dataclass
class Submission:
    """What the cluster answered."""

    kind: str  # "run" or "recurring_run"
    id: str
    experiment_id: str
    host: str
    name: str

    @property
    def url(self) -> str:
        page = "runs" if self.kind == "run" else "recurringrun"
        return f"{self.host}/#/{page}/details/{self.id}"


def resolve_host(host: str | None) -> str:
    """``host`` or ``$KFP_HOST``; an http(s) URL without a trailing slash."""
    host = host or os.environ.get(HOST_ENV)
    if not host:
        raise ConfigError(
            f"no Kubeflow Pipelines host: pass --host URL or set {HOST_ENV} (e.g. "
            "http://localhost:8080 after `kubectl port-forward -n kubeflow svc/ml-pipeline-ui "
            "8080:80`)."
        )
    if not host.startswith(("http://", "https://")):
        raise ConfigError(f"KFP host {host!r} must start with http:// or https://.")
    return host.rstrip("/")


def check_reachable(host: str, timeout_s: float = 10.0) -> None:
    """Raises KfpError unless ``host`` answers HTTP; auth errors are left to kfp.Client."""
    import urllib.error
    import urllib.request

    url = host + HEALTHZ_PATH
    try:
        with urllib.request.urlopen(url, timeout=timeout_s):
            return
    except urllib.error.HTTPError as e:
        if e.code == 404:
            raise KfpError(
                f"{host} answered but is not a Kubeflow Pipelines v2 API (404 on {HEALTHZ_PATH}); "
                "point --host at the ml-pipeline (UI or API) service."
            ) from None
        return  # 401/403/302: reachable; kfp.Client's credentials decide
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise KfpError(
            f"cannot reach Kubeflow Pipelines at {host} ({reason}). Check --host / {HOST_ENV}, "
            "that the cluster is up, and any port-forward or proxy."
        ) from None


def _credentials():
    from kfp import client as kfp_client

    path = os.environ.get(
        kfp_client.KF_PIPELINES_SA_TOKEN_ENV, kfp_client.KF_PIPELINES_SA_TOKEN_PATH
    )
    if os.path.isfile(path):
        return kfp_client.ServiceAccountTokenVolumeCredentials(path)
    return None


def make_client(host: str | None, namespace: str | None = None, timeout_s: float = 10.0):
    """A ``kfp.Client`` for a host that answered the probe."""
    host = resolve_host(host)
    check_reachable(host, timeout_s)
    import warnings

    import kfp

    namespace = namespace or os.environ.get(NAMESPACE_ENV)
    kwargs = {"host": host, "credentials": _credentials()}
    if namespace:
        kwargs["namespace"] = namespace
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "only works with KFP >= 2.0.0-beta.2"
        try:
            return kfp.Client(**kwargs)
        except Exception as e:
            raise _api_error(host, "connect to", e) from None


def _api_error(host: str, action: str, error: Exception) -> KfpError:
    status = getattr(error, "status", None)
    body = getattr(error, "body", None) or getattr(error, "reason", None) or error
    hint = ""
    if status in (401, 403):
        hint = " Check your credentials and namespace (multi-user KFP needs --namespace)."
    return KfpError(
        f"Kubeflow Pipelines at {host} failed to {action}: {status or ''} {body}.{hint}"
    )


def check_parameters(package, parameters: dict) -> dict:
    """Rejects unknown parameters and missing required ones, naming them (no cluster needed)."""
    declared = package.parameters
    parameters = {k: v for k, v in parameters.items() if v is not None}
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        raise ConfigError(
            f"unknown pipeline parameter(s) {', '.join(unknown)}; the package takes "
            f"{', '.join(sorted(declared))}."
        )
    missing = sorted(n for n, d in declared.items() if "default" not in d and n not in parameters)
    if missing:
        flags = ", ".join(_FLAGS.get(n, f"--{n.replace('_', '-')}") for n in missing)
        raise ConfigError(f"pipeline parameter(s) {', '.join(missing)} need a value ({flags}).")
    return parameters


def _load_for_kfp(package_path: str):
    from pipelines.kubeflow.runner import load_package

    package = load_package(package_path)
    if package.output_format != "yaml":
        raise ConfigError(
            f"{package_path} is a Vertex AI PipelineJob (JSON); Kubeflow Pipelines takes the YAML "
            "package: compile with --output pipeline.yaml (or submit the JSON with Vertex's "
            "aiplatform.PipelineJob)."
        )
    return package


def submit(
    package_path: str,
    parameters: dict,
    *,
    host: str | None = None,
    pipeline_root: str | None = None,
    experiment: str = "tfxopt",
    run_name: str | None = None,
    namespace: str | None = None,
    service_account: str | None = None,
    enable_caching: bool | None = None,
    client=None,
) -> Submission:
    """Starts one run of a compiled package; returns its id.

    Args:
      package_path: a YAML package from ``tfxopt compile``.
      parameters: runtime parameters (``model_uri``, ``examples_uri``); None values are dropped.
      host: KFP endpoint (default ``$KFP_HOST``).
      pipeline_root: this run's root (default: the package's ``defaultPipelineRoot``).
      experiment: experiment the run belongs to (created when missing).
      run_name: display name (default: pipeline name and UTC time).
      namespace: KFP namespace (multi-user deployments).
      service_account: Kubernetes service account of the run's pods.
      enable_caching: override every step's caching (None: as compiled).
      client: an existing kfp.Client (tests, or to reuse one across submissions).
    """
    package = _load_for_kfp(package_path)
    params = check_parameters(package, parameters)
    host = resolve_host(host) if client is None else (host or "")
    client = client or make_client(host, namespace)
    name = run_name or _default_name(package)
    try:
        result = client.create_run_from_pipeline_package(
            pipeline_file=package_path,
            arguments=params,
            run_name=name,
            experiment_name=experiment,
            namespace=namespace or os.environ.get(NAMESPACE_ENV),
            pipeline_root=pipeline_root,
            enable_caching=enable_caching,
            service_account=service_account,
        )
    except TfxOptError:
        raise
    except Exception as e:
        raise _api_error(host, "create the run", e) from None
    experiment_id = getattr(result.run_info, "experiment_id", "") or ""
    return Submission("run", result.run_id, experiment_id, host, name)


# KFP's scheduler (robfig/cron, seconds first): each field's name, range and names it accepts.
_CRON_RANGES = (
    ("second", 0, 59, ()),
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, ("JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC").split()),
    ("day of week", 0, 6, "SUN MON TUE WED THU FRI SAT".split()),
)
_CRON_ITEM = re.compile(r"^(\*|\?|[0-9A-Za-z]+(?:-[0-9A-Za-z]+)?)(?:/(\d+))?$")


def _cron_field_error(field: str, name: str, low: int, high: int, names) -> str | None:
    """Why ``field`` is not a valid cron field (None when it is)."""

    def value_ok(token: str) -> bool:
        if token.isdigit():
            return low <= int(token) <= high
        return token.upper() in names

    for item in field.split(","):
        match = _CRON_ITEM.match(item)
        if not match:
            return f"{name} field {field!r} is not a cron list/range/step"
        base, step = match.groups()
        if step is not None and int(step) == 0:
            return f"{name} field {field!r} has a step of 0"
        if base in ("*", "?"):
            continue
        bounds = base.split("-")
        if not all(value_ok(b) for b in bounds):
            allowed = f"{low}-{high}" + (f" or {names[0]}..{names[-1]}" if names else "")
            return f"{name} field {field!r} is out of range (allowed {allowed})"
    return None


def parse_cron(expression: str) -> str:
    """A KFP cron expression (6 fields, seconds first); a standard 5-field one gets ``0`` seconds.

    Each field is checked against its range (minute 0-59, hour 0-23, ...) here, so a typo fails
    before anything is sent to KFP rather than as a recurring run that never fires.
    """
    fields = expression.split()
    if len(fields) == 5:
        fields = ["0", *fields]
    if len(fields) != 6 or not all(_CRON_FIELD.match(f) for f in fields):
        raise ConfigError(
            f"cron {expression!r}: use 5 fields 'min hour day month weekday' (e.g. '0 3 * * *' "
            "for 03:00 daily) or KFP's 6 fields with seconds first."
        )
    for field, (name, low, high, names) in zip(fields, _CRON_RANGES, strict=True):
        why = _cron_field_error(field, name, low, high, names)
        if why:
            raise ConfigError(
                f"cron {expression!r}: {why}. Fields are 'min hour day month weekday' "
                "(or KFP's 6 with seconds first), e.g. '0 3 * * *' for 03:00 daily."
            )
    return " ".join(fields)


def parse_interval(text: str | int) -> int:
    """Seconds from ``3600``, ``90s``, ``15m``, ``6h`` or ``1d``."""
    match = _INTERVAL.match(str(text))
    if not match or int(match.group(1)) <= 0:
        raise ConfigError(
            f"interval {text!r}: use a positive number of seconds or 90s, 15m, 6h, 1d."
        )
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def schedule(
    package_path: str,
    parameters: dict,
    *,
    cron: str | None = None,
    interval: str | int | None = None,
    host: str | None = None,
    pipeline_root: str | None = None,
    experiment: str = "tfxopt",
    name: str | None = None,
    namespace: str | None = None,
    service_account: str | None = None,
    enable_caching: bool | None = None,
    max_concurrency: int = 1,
    catchup: bool = False,
    client=None,
) -> Submission:
    """Creates a recurring run from a cron expression or an interval; returns its id."""
    if (cron is None) == (interval is None):
        raise ConfigError("give exactly one of --cron or --every.")
    cron_expression = parse_cron(cron) if cron is not None else None
    interval_s = parse_interval(interval) if interval is not None else None
    if max_concurrency < 1:
        raise ConfigError(f"max_concurrency must be >= 1 (got {max_concurrency}).")
    package = _load_for_kfp(package_path)
    params = check_parameters(package, parameters)
    host = resolve_host(host) if client is None else (host or "")
    client = client or make_client(host, namespace)
    job_name = name or f"{package.pipeline_spec.pipeline_info.name} (scheduled)"
    ns = namespace or os.environ.get(NAMESPACE_ENV)
    try:
        experiment_obj = client.create_experiment(name=experiment, namespace=ns)
        recurring = client.create_recurring_run(
            experiment_id=experiment_obj.experiment_id,
            job_name=job_name,
            cron_expression=cron_expression,
            interval_second=interval_s,
            params=params,
            pipeline_package_path=package_path,
            pipeline_root=pipeline_root,
            enable_caching=enable_caching,
            service_account=service_account,
            max_concurrency=max_concurrency,
            no_catchup=not catchup,
        )
    except TfxOptError:
        raise
    except Exception as e:
        raise _api_error(host, "create the recurring run", e) from None
    return Submission(
        "recurring_run", recurring.recurring_run_id, experiment_obj.experiment_id, host, job_name
    )


def _default_name(package) -> str:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H-%M-%S UTC")
    return f"{package.pipeline_spec.pipeline_info.name} {now}"
