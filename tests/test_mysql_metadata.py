"""ML Metadata on a real MySQL-compatible server, as Kubeflow Pipelines deployments keep it.

The test starts its own MariaDB (Debian's ``mariadb-server``; ``scripts/install_mariadb.sh``
installs it) on 127.0.0.1 with a throwaway data directory and a real account with a password,
points a local run at it through ``TFXOPT_MLMD_MYSQL_*`` and stops it afterwards. Without the
binaries the tests are skipped, saying how to install them.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "scripts"))
import mariadb_test_server  # noqa: E402

pytestmark = pytest.mark.e2e

PIPELINE = "mysql-e2e"
FAST_PROFILER = {"warmup_runs": 2, "timed_runs": 10, "throughput_runs": 1, "measure_memory": False}


@pytest.fixture(scope="module")
def mariadb():
    if mariadb_test_server.find_binaries() is None:
        pytest.skip(
            "MariaDB is not installed (no mariadbd / mariadb-install-db): run "
            "scripts/install_mariadb.sh (apt-get install mariadb-server) to run these tests"
        )
    server = mariadb_test_server.MariaDBServer(database="tfxopt_mlmd_test")
    server.start()
    pid, base_dir = server.pid, server.base_dir
    try:
        yield server
    finally:
        server.stop()
    # stopped what it started (the process is gone, reaped), and left nothing behind
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not os.path.exists(base_dir)


@pytest.fixture
def mysql_env(mariadb, monkeypatch):
    for key, value in mariadb.environment().items():
        monkeypatch.setenv(key, value)
    return mariadb.environment()


def _tcp_sql(server, statement: str) -> list[list[str]]:
    """Runs SQL as the test account over TCP on 127.0.0.1, as ML Metadata connects."""
    done = subprocess.run(
        [
            server.binaries["client"],
            "--no-defaults",
            "--protocol=TCP",
            f"--host={server.host}",
            f"--port={server.port}",
            f"--user={server.user}",
            "--batch",
            "--skip-column-names",
            server.database,
            "-e",
            statement,
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "MYSQL_PWD": server.password},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return [line.split("\t") for line in done.stdout.splitlines()]


def test_local_pipeline_records_into_mariadb_and_reuses_its_cache(
    mariadb, mysql_env, tiny_model, tiny_examples, tmp_path
):
    from pipelines.config import PipelineConfig
    from pipelines.local.runner import run_local
    from pipelines.pipeline import BASELINE_PROFILER_ID

    model = str(tmp_path / "model")
    tiny_model.save(model, save_format="tf")
    config = PipelineConfig.parse({"pipeline_name": PIPELINE, "profiler": FAST_PROFILER})
    out = tmp_path / "out"

    run = run_local(config, model, tiny_examples, str(out))
    assert {s.node_id: s.state for s in run.steps} == {
        "ExampleGen": "COMPLETE",
        "CheckpointImporter": "COMPLETE",
        "ModelImporter": "COMPLETE",
        BASELINE_PROFILER_ID: "COMPLETE",
    }
    assert run.metadata_path == (
        f"mysql://{mariadb.user}@127.0.0.1:{mariadb.port}/{mariadb.database}"
    )
    assert run.metadata_connection.mysql.port == mariadb.port
    assert not (out / "metadata.sqlite").exists()  # everything went to the server
    [profile] = run.outputs_of(BASELINE_PROFILER_ID, "profile")
    assert profile.custom_properties["eval_examples"].int_value == 32

    # The server holds the run: its executions and the node contexts, read back over TCP.
    contexts = {row[0] for row in _tcp_sql(mariadb, "SELECT name FROM Context")}
    assert {PIPELINE, f"{PIPELINE}.{BASELINE_PROFILER_ID}", run.run_id} <= contexts
    [[executions]] = _tcp_sql(mariadb, "SELECT COUNT(*) FROM Execution")
    assert int(executions) == 4  # ExampleGen, CheckpointImporter, ModelImporter, BaselineProfiler

    again = run_local(config, model, tiny_examples, str(out))
    states = {s.node_id: s.state for s in again.steps}
    assert states[BASELINE_PROFILER_ID] == "CACHED" and states["ExampleGen"] == "CACHED"
    [cached] = again.outputs_of(BASELINE_PROFILER_ID, "profile")
    assert cached.id == profile.id  # the artifact recorded in MariaDB the first time
    [[executions]] = _tcp_sql(mariadb, "SELECT COUNT(*) FROM Execution")
    assert int(executions) == 8  # a cached step records an execution too: 4 more


def test_wrong_mysql_password_fails_before_the_pipeline_starts(
    mariadb, mysql_env, tiny_model, tiny_examples, tmp_path, monkeypatch, capsys
):
    from pipelines import cli

    model = str(tmp_path / "model")
    tiny_model.save(model, save_format="tf")
    monkeypatch.setenv("TFXOPT_MLMD_MYSQL_PASSWORD", "not-the-password")
    out = tmp_path / "out"
    code = cli.main(["run", "--model", model, "--examples", tiny_examples, "--output", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    message = err[err.index("tfxopt: error: ") :]
    assert f"mysql://{mariadb.user}@127.0.0.1:{mariadb.port}/" in message
    assert "TFXOPT_MLMD_MYSQL_PASSWORD" in message and "Traceback" not in err
    assert not (out / "pipeline-root").exists()


def test_anonymous_accounts_cannot_shadow_the_test_user(mariadb):
    # MariaDB picks the most specific host first: an anonymous ''@'localhost' would win over
    # 'user'@'%' for local connections. The helper drops anonymous accounts and creates the user
    # for localhost, 127.0.0.1 and % alike.
    users = mariadb.sql("SELECT CONCAT(User, '@', Host) FROM mysql.user").split()
    assert not [u for u in users if u.startswith("@")], users
    for host in ("localhost", "127.0.0.1", "%"):
        assert f"{mariadb.user}@{host}" in users
    [[who]] = _tcp_sql(mariadb, "SELECT CURRENT_USER()")
    assert who == f"{mariadb.user}@127.0.0.1"
