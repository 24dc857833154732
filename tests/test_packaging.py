"""Packaging: ranges in pyproject.toml, exact pins only in requirements/constraints.txt, the two
in agreement (every pin inside its range, every dependency pinned), and the installed set the
pinned one."""

from __future__ import annotations

import os
import re
from importlib import metadata

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYPROJECT = os.path.join(REPO_ROOT, "pyproject.toml")
CONSTRAINTS = os.path.join(REPO_ROOT, "requirements", "constraints.txt")


def _project() -> dict:
    import tomli  # Python 3.10 has no tomllib

    with open(PYPROJECT, "rb") as f:
        return tomli.load(f)["project"]


def _requirements() -> list[Requirement]:
    project = _project()
    declared = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        declared += extra
    return [Requirement(text) for text in declared]


def _pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    with open(CONSTRAINTS) as f:
        for number, line in enumerate(f, 1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!_-]+)", text)
            assert match, f"constraints.txt:{number}: {text!r} is not an exact pin NAME==VERSION"
            name = canonicalize_name(match.group(1))
            assert name not in pins, f"constraints.txt:{number}: {name} is pinned twice"
            pins[name] = match.group(2)
    return pins


def test_pyproject_declares_ranges_never_exact_pins():
    for requirement in _requirements():
        operators = {spec.operator for spec in requirement.specifier}
        assert operators, f"{requirement}: give a range (>=,<), the pin goes in constraints.txt"
        assert not operators & {"==", "==="}, (
            f"pyproject.toml pins {requirement} exactly: declare a range, and pin it in "
            "requirements/constraints.txt"
        )


def test_every_dependency_is_pinned_inside_its_range():
    pins = _pins()
    for requirement in _requirements():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} has a range in pyproject.toml but no pin"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{name}=={pins[name]} (constraints.txt) is outside {requirement.specifier} "
            "(pyproject.toml)"
        )


def test_the_installed_dependencies_are_the_pinned_ones():
    pins = _pins()
    for requirement in _requirements():
        name = canonicalize_name(requirement.name)
        try:
            installed = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            pytest.fail(f"{requirement.name} is declared but not installed: make venv")
        assert installed == pins[name], (name, installed, pins[name])


def test_setup_installs_with_the_constraints():
    with open(os.path.join(REPO_ROOT, "scripts", "setup_venv.sh")) as f:
        setup = f.read()
    assert "-c requirements/constraints.txt -e '.[dev]'" in setup
    assert "requirements/constraints.txt" in setup.split("INPUTS=(", 1)[1].split(")", 1)[0]


# -- make test without root ---------------------------------------------------------------------
def _shims(tmp_path, user_id: int = 1000) -> dict:
    """A PATH where this is not root, no sudo, no chromium and no mariadbd, a kubectl that
    renders, and a stand-in Python that records how pytest was called."""
    import shutil

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "cat"):
        os.symlink(shutil.which(tool), bin_dir / tool)
    (bin_dir / "id").write_text(f"#!/bin/sh\necho {user_id}\n")
    (bin_dir / "kubectl").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "apt-get").write_text("#!/bin/sh\necho 'E: no network' >&2\nexit 100\n")
    record = tmp_path / "pytest-call"
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\necho "$* NO_BROWSER=$TFXOPT_NO_BROWSER" > {record}\nexit 5\n')
    for path in (*bin_dir.iterdir(), python):
        path.chmod(0o755)
    env = {
        "PATH": str(bin_dir),
        "PY": str(python),
        "PYTHON": str(tmp_path / "no-python"),  # install_kubectl.sh never pip-installs here
        "HOME": str(tmp_path),
    }
    return {"env": env, "record": record}


@pytest.mark.skipif(os.path.exists("/usr/sbin/mariadbd"), reason="mariadbd is installed here")
def test_make_test_without_root_runs_the_rest_and_says_what_it_skipped(tmp_path):
    import subprocess

    shims = _shims(tmp_path)
    done = subprocess.run(
        ["bash", os.path.join(REPO_ROOT, "scripts", "run_tests.sh"), "-m", "not slow", "tests"],
        env=shims["env"], capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 5, done.stderr  # pytest's own status comes back
    assert shims["record"].read_text().split() == [
        "-m", "pytest", "-m", "not", "slow", "tests", "NO_BROWSER=1",
    ]  # fmt: skip
    skipped = done.stderr.split("not installed, so skipped")
    assert len(skipped) == 3, done.stderr  # said before and after the tests
    for part in skipped[1:]:
        assert "test_report_opens_in_headless_chromium" in part and "test_mysql_metadata" in part
        assert "test_k8s_manifests" not in part  # kubectl renders: nothing skipped there


def test_an_installer_that_fails_for_another_reason_stops_make_test(tmp_path):
    import subprocess

    shims = _shims(tmp_path, user_id=0)  # root, but apt-get fails (no network)
    done = subprocess.run(
        ["bash", os.path.join(REPO_ROOT, "scripts", "run_tests.sh"), "tests"],
        env=shims["env"], capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 100, done.stderr
    assert "install_chromium.sh failed (exit 100)" in done.stderr
    assert not shims["record"].exists()  # pytest never started


def test_the_makefile_test_targets_and_ci_go_through_run_tests():
    with open(os.path.join(REPO_ROOT, "Makefile")) as f:
        makefile = f.read()
    for target in ("test", "test-isa", "test-all"):
        body = makefile.split(f"\n{target}: venv\n", 1)[1].split("\n\n", 1)[0]
        assert "scripts/run_tests.sh" in body, target
    with open(os.path.join(REPO_ROOT, ".ci", "run")) as f:
        assert "make test" in f.read()
