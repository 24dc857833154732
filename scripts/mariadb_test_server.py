"""A throwaway MariaDB server for tests: its own data directory, 127.0.0.1 only, a random port.

    with MariaDBServer() as server:            # mariadb-install-db + mariadbd, ready to use
        env = server.environment()             # TFXOPT_MLMD_MYSQL_* for pipelines.metadata.config
        ...
    # stopped (mariadb-admin shutdown, then SIGTERM/SIGKILL if need be), data directory removed

Run as a script to keep one up by hand: ``python scripts/mariadb_test_server.py`` prints the
settings and stops the server on Ctrl-C.

The server gets a real account with a password, created for ``'user'@'localhost'``,
``'user'@'127.0.0.1'`` and ``'user'@'%'`` (MariaDB matches the most specific host first, so an
anonymous ``''@'localhost'`` account would otherwise shadow ``'user'@'%'``); anonymous accounts are
dropped anyway. The server listens on 127.0.0.1 only and keeps its socket, pid file and log in the
temporary directory, so nothing of the machine's own MariaDB (if any) is touched.

Only the standard library is used; the binaries come from Debian's ``mariadb-server`` package
(``scripts/install_mariadb.sh`` installs it). :func:`find_binaries` returns None when it is missing.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time

SEARCH_DIRS = ("/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin")


class MariaDBError(RuntimeError):
    """The server could not be set up or did not start; the message holds the log's tail."""


def _which(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
        for directory in SEARCH_DIRS:
            path = os.path.join(directory, name)
            if os.access(path, os.X_OK):
                return path
    return None


def find_binaries() -> dict | None:
    """{'server', 'install_db', 'client', 'admin'} paths, or None when MariaDB is not installed."""
    found = {
        "server": _which("mariadbd", "mysqld"),
        "install_db": _which("mariadb-install-db", "mysql_install_db"),
        "client": _which("mariadb", "mysql"),
        "admin": _which("mariadb-admin", "mysqladmin"),
    }
    return found if all(found.values()) else None


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the server retries if another process takes it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class MariaDBServer:
    """Starts and stops one private MariaDB server (see the module docstring).

    Args:
      database: the database created for the tests (MLMD fills it with its tables).
      user: the account created, with ``password`` (default: random).
      base_dir: where the data directory, socket and log go (default: a new temporary directory,
        removed on stop).
      start_timeout_s: how long to wait for the server to accept connections.
    """

    def __init__(
        self,
        database: str = "tfxopt_mlmd",
        user: str = "tfxopt",
        password: str | None = None,
        base_dir: str | None = None,
        start_timeout_s: float = 90.0,
    ):
        binaries = find_binaries()
        if binaries is None:
            raise MariaDBError(
                "MariaDB is not installed (no mariadbd / mariadb-install-db): run "
                "scripts/install_mariadb.sh"
            )
        self.binaries = binaries
        self.database = database
        self.user = user
        self.password = password or secrets.token_hex(12)
        self.host = "127.0.0.1"
        self.port: int | None = None
        self._own_dir = base_dir is None
        self.base_dir = base_dir or tempfile.mkdtemp(prefix="tfxopt-mariadb-")
        self.datadir = os.path.join(self.base_dir, "data")
        self.socket = os.path.join(self.base_dir, "mysqld.sock")
        self.log_path = os.path.join(self.base_dir, "mariadbd.log")
        self.pid_file = os.path.join(self.base_dir, "mariadbd.pid")
        self.start_timeout_s = start_timeout_s
        self._process: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self._process.pid if self._process is not None else None

    # ----------------------------------------------------------------------- lifecycle

    def start(self) -> MariaDBServer:
        """Initialises the data directory, starts the server and creates the database and user."""
        try:
            self._install_db()
            for _ in range(3):  # another process may take the free port before the server binds
                self.port = free_port()
                if self._launch():
                    break
            else:
                raise MariaDBError(f"mariadbd did not start:\n{self._log_tail()}")
            self._bootstrap()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stops the server (clean shutdown, then SIGTERM, then SIGKILL) and removes its files."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                subprocess.run(
                    [self.binaries["admin"], "--no-defaults", f"--socket={self.socket}", "-uroot"]
                    + ["shutdown"],
                    capture_output=True,
                    timeout=30,
                )
            for sig in (None, signal.SIGTERM, signal.SIGKILL):
                if sig is not None and process.poll() is None:
                    process.send_signal(sig)
                try:
                    process.wait(timeout=20)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> MariaDBServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ----------------------------------------------------------------------- helpers

    def _run_as(self) -> list[str]:
        # mariadbd refuses to run as root unless told to; as any other user it runs as that user.
        return ["--user=root"] if os.geteuid() == 0 else []

    def _install_db(self) -> None:
        os.makedirs(self.datadir, exist_ok=True)
        done = subprocess.run(
            [
                self.binaries["install_db"],
                "--no-defaults",
                f"--datadir={self.datadir}",
                "--auth-root-authentication-method=normal",  # root@localhost, no password, socket
                "--skip-test-db",
                *self._run_as(),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            raise MariaDBError(
                f"mariadb-install-db failed ({done.returncode}):\n{done.stdout[-2000:]}\n"
                f"{done.stderr[-2000:]}"
            )

    def _launch(self) -> bool:
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                [
                    self.binaries["server"],
                    "--no-defaults",
                    f"--datadir={self.datadir}",
                    f"--socket={self.socket}",
                    f"--pid-file={self.pid_file}",
                    f"--port={self.port}",
                    "--bind-address=127.0.0.1",
                    f"--log-error={self.log_path}",
                    f"--tmpdir={self.base_dir}",
                    "--skip-name-resolve",
                    "--skip-log-bin",
                    "--innodb-buffer-pool-size=32M",
                    "--innodb-log-file-size=16M",
                    "--max-connections=50",
                    *self._run_as(),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the test's terminal goes to the test only
            )
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._process = None
                return False  # e.g. the port was taken: the caller tries another
            if self._ping():
                return True
            time.sleep(0.2)
        raise MariaDBError(  # start() stops the process and removes the files
            f"mariadbd did not accept connections in {self.start_timeout_s:.0f} s:\n"
            f"{self._log_tail()}"
        )

    def _ping(self) -> bool:
        done = subprocess.run(
            [self.binaries["admin"], "--no-defaults", f"--socket={self.socket}", "-uroot", "ping"],
            capture_output=True,
            timeout=30,
        )
        return done.returncode == 0

    def sql(
        self,
        statements: str,
        user: str = "root",
        password: str | None = None,
        database: str | None = None,
    ) -> str:
        """Runs SQL through the server's socket with the ``mariadb`` client; returns its stdout.

        Raises:
          MariaDBError: with the client's error message.
        """
        args = [self.binaries["client"], "--no-defaults", f"--socket={self.socket}", f"-u{user}"]
        env = dict(os.environ)
        if password is not None:
            env["MYSQL_PWD"] = password  # not on the command line (visible in ps)
        done = subprocess.run(
            [
                *args,
                "--batch",
                "--skip-column-names",
                "-e",
                statements,
                *([database] if database else []),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        if done.returncode != 0:
            raise MariaDBError(f"SQL failed: {done.stderr.strip()}")
        return done.stdout

    def _bootstrap(self) -> None:
        user, password, db = self.user, _quote(self.password), self.database
        accounts = [f"{_quote(user)}@{_quote(host)}" for host in ("localhost", "127.0.0.1", "%")]
        anonymous = self.sql("SELECT Host FROM mysql.user WHERE User = ''").split()
        statements = [f"DROP USER IF EXISTS ''@{_quote(host)}" for host in anonymous]
        statements += [f"CREATE DATABASE IF NOT EXISTS `{db}`"]
        for account in accounts:
            statements += [
                f"CREATE USER IF NOT EXISTS {account} IDENTIFIED BY {password}",
                f"GRANT ALL PRIVILEGES ON `{db}`.* TO {account}",
            ]
        statements.append("FLUSH PRIVILEGES")
        self.sql("; ".join(statements))

    def _log_tail(self, lines: int = 30) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return "(no log)"

    def environment(self) -> dict[str, str]:
        """The ``TFXOPT_MLMD_MYSQL_*`` variables that point a local run at this server."""
        return {
            "TFXOPT_MLMD_MYSQL_HOST": self.host,
            "TFXOPT_MLMD_MYSQL_PORT": str(self.port),
            "TFXOPT_MLMD_MYSQL_DATABASE": self.database,
            "TFXOPT_MLMD_MYSQL_USER": self.user,
            "TFXOPT_MLMD_MYSQL_PASSWORD": self.password,
        }


def main() -> int:
    with MariaDBServer() as server:
        for key, value in server.environment().items():
            print(f"export {key}={value}")
        print(f"# data in {server.base_dir}; Ctrl-C stops the server", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
