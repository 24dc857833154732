"""Which ML Metadata store a local run records into: SQLite beside its outputs, or a MySQL server.

By default a local run keeps ML Metadata in ``<output>/metadata.sqlite``. Kubeflow Pipelines
deployments keep it in MySQL (or MariaDB); a local run records into such a server too when
``TFXOPT_MLMD_MYSQL_HOST`` is set. The settings come from the environment, so the password never
appears on a command line (``ps``) or in a config file under version control:

=============================  ===================================================
``TFXOPT_MLMD_MYSQL_HOST``     host name or address; setting it selects MySQL
``TFXOPT_MLMD_MYSQL_PORT``     TCP port (default 3306)
``TFXOPT_MLMD_MYSQL_DATABASE`` database (default ``tfxopt_metadata``; ML Metadata creates its
                               tables, and the database too when the user may)
``TFXOPT_MLMD_MYSQL_USER``     account name (required with a host)
``TFXOPT_MLMD_MYSQL_PASSWORD`` its password (may be empty)
=============================  ===================================================

The connection is opened once before the pipeline starts (:func:`check_connection`), so a wrong
host, port or password fails at once with a message naming the setting, not after the first step.

Several output directories can share one server: steps are cached across them by pipeline name,
inputs and configuration, and a cached result points at the directory that produced it. Give
different experiments different ``pipeline_name`` values (or ``enable_cache: false``) when those
directories are short-lived.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from components.common.errors import ConfigError
from components.common.keys import METADATA_FILE

ENV_PREFIX = "TFXOPT_MLMD_MYSQL_"
HOST_ENV = ENV_PREFIX + "HOST"
PORT_ENV = ENV_PREFIX + "PORT"
DATABASE_ENV = ENV_PREFIX + "DATABASE"
USER_ENV = ENV_PREFIX + "USER"
PASSWORD_ENV = ENV_PREFIX + "PASSWORD"
DEFAULT_PORT = 3306
DEFAULT_DATABASE = "tfxopt_metadata"
SQLITE_FILE = METADATA_FILE  # the name runners and readers of a local run use


@dataclass(frozen=True)
class MySqlSettings:
    """Where the MySQL-compatible ML Metadata server is, and how to log in."""

    host: str
    port: int
    database: str
    user: str
    password: str = ""

    def describe(self) -> str:
        """``mysql://user@host:port/database`` (no password), for reports and messages."""
        return f"mysql://{self.user}@{self.host}:{self.port}/{self.database}"


@dataclass(frozen=True)
class MetadataStore:
    """The ML Metadata connection of a run and a printable description of where it points."""

    kind: str  # "sqlite" or "mysql"
    connection_config: object  # ml_metadata ConnectionConfig proto
    location: str  # the SQLite file, or MySqlSettings.describe()


def mysql_settings(environ: Mapping[str, str] | None = None) -> MySqlSettings | None:
    """The MySQL settings from ``TFXOPT_MLMD_MYSQL_*``, or None when no host is set.

    Raises:
      ConfigError: naming the variable that is missing or malformed.
    """
    env = os.environ if environ is None else environ
    host = env.get(HOST_ENV, "").strip()
    if not host:
        others = sorted(k for k in (PORT_ENV, DATABASE_ENV, USER_ENV) if env.get(k))
        if others:
            raise ConfigError(
                f"{', '.join(others)} set but {HOST_ENV} is not: set {HOST_ENV} to record ML "
                "Metadata in MySQL, or unset the others to use SQLite."
            )
        return None
    port_text = env.get(PORT_ENV, "").strip() or str(DEFAULT_PORT)
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ConfigError(f"{PORT_ENV}={port_text!r} is not a TCP port number (1-65535).")
    user = env.get(USER_ENV, "").strip()
    if not user:
        raise ConfigError(f"{HOST_ENV} is set but {USER_ENV} is not: name the MySQL account.")
    database = env.get(DATABASE_ENV, "").strip() or DEFAULT_DATABASE
    if not database.replace("_", "").replace("-", "").isalnum():
        raise ConfigError(
            f"{DATABASE_ENV}={database!r}: use letters, digits, '_' or '-' for the database name."
        )
    return MySqlSettings(host, int(port_text), database, user, env.get(PASSWORD_ENV, ""))


def metadata_store(output_dir: str, environ: Mapping[str, str] | None = None) -> MetadataStore:
    """The store of a local run writing to ``output_dir``: MySQL when configured, else SQLite.

    Raises:
      ConfigError: when the MySQL variables are incomplete or malformed.
    """
    from tfx.orchestration import metadata

    settings = mysql_settings(environ)
    if settings is None:
        path = os.path.join(output_dir, SQLITE_FILE)
        return MetadataStore("sqlite", metadata.sqlite_metadata_connection_config(path), path)
    config = metadata.mysql_metadata_connection_config(
        host=settings.host,
        port=settings.port,
        database=settings.database,
        username=settings.user,
        password=settings.password,
    )
    return MetadataStore("mysql", config, settings.describe())


def check_connection(store: MetadataStore) -> None:
    """Opens the store once, so bad MySQL settings fail before the pipeline starts.

    SQLite needs no check (the output directory was checked to be writable).

    Raises:
      ConfigError: naming the server and the variables to fix.
    """
    if store.kind != "mysql":
        return
    from ml_metadata.metadata_store import metadata_store as mlmd_store

    try:
        mlmd_store.MetadataStore(store.connection_config)
    except Exception as e:  # noqa: BLE001 - MLMD raises its own status errors for every cause
        reason = " ".join(str(e).split())[:300]
        raise ConfigError(
            f"cannot open ML Metadata at {store.location} ({reason}). Check "
            f"{HOST_ENV}/{PORT_ENV}, {USER_ENV}/{PASSWORD_ENV} and that the user may use (or "
            f"create) {DATABASE_ENV}; unset {HOST_ENV} to use SQLite."
        ) from None
