"""The docs hold to the code: the config reference is generated from the config models, every
``tfxopt`` command in the READMEs parses with the CLI, every link resolves, the README stays a map."""

from __future__ import annotations

import os
import re
import shlex

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Written by other parts of the project; the README and the docs index link them already.
PLANNED_DOCS = {"docs/transform.md", "docs/accuracy_control.md", "docs/ota.md"}


def _read(path: str) -> str:
    with open(os.path.join(REPO_ROOT, path)) as f:
        return f.read()


def _markdown_files() -> list[str]:
    files = ["README.md", "k8s/README.md"]
    files += sorted(
        f"docs/{n}" for n in os.listdir(os.path.join(REPO_ROOT, "docs")) if n.endswith(".md")
    )
    return files


def test_the_config_reference_is_generated_from_the_models():
    from scripts import config_reference

    assert _read("docs/config.md") == config_reference.render(), (
        "docs/config.md is stale: run python scripts/config_reference.py"
    )


def test_the_config_reference_names_every_key_of_the_shipped_configs():
    import yaml

    reference = _read("docs/config.md")
    documented = set(re.findall(r"^\| `([^`]+)` \|", reference, re.M))
    generic = {re.sub(r"\[\]|\.<name>", "", key) for key in documented}

    def keys(data, prefix=""):
        for key, value in data.items():
            dotted = f"{prefix}{key}"
            if isinstance(value, dict) and dotted not in ("kubeflow.steps", "candidates", "tasks"):
                yield from keys(value, f"{dotted}.")
            elif isinstance(value, list) and value and isinstance(value[0], dict):
                for item in value:
                    yield from keys(item, f"{dotted}.")
            else:
                yield dotted

    configs = os.path.join(REPO_ROOT, "pipelines", "configs")
    for name in sorted(os.listdir(configs)):
        with open(os.path.join(configs, name)) as f:
            data = yaml.safe_load(f)
        data.pop("tasks", None)
        for key in keys(data):
            assert key in generic, f"{name}: {key} is not in docs/config.md"


def test_the_reference_names_the_environment_variables_the_code_reads():
    from components.pusher.commands import DEFAULT_KEY_ENV
    from pipelines.metadata import config as metadata_config

    reference = _read("docs/config.md")
    for name in (
        metadata_config.HOST_ENV,
        metadata_config.PORT_ENV,
        metadata_config.DATABASE_ENV,
        metadata_config.USER_ENV,
        metadata_config.PASSWORD_ENV,
        DEFAULT_KEY_ENV,
    ):
        assert f"| `{name}` |" in reference


def _commands(markdown: str) -> list[str]:
    """Every `tfxopt ...` line of the file's fenced code blocks (continuations joined)."""
    found = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", markdown, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if line.startswith("tfxopt "):
                found.append(line)
    return found


def _argv(line: str) -> list[str]:
    tokens = shlex.split(line, comments=True)
    for stop in (">", "|", "&&", "&", ";"):
        if stop in tokens:
            tokens = tokens[: tokens.index(stop)]
    return tokens[1:]


def _component_readmes() -> list[str]:
    root = os.path.join(REPO_ROOT, "components")
    return sorted(
        f"components/{name}/README.md"
        for name in os.listdir(root)
        if os.path.isfile(os.path.join(root, name, "README.md"))
    )


# The README's commands all; elsewhere, the lines that are commands, not synopses ([...], ...).
README_COMMANDS = _commands(_read("README.md")) + [
    c
    for path in ["k8s/README.md", *_markdown_files()[2:], *_component_readmes()]
    for c in _commands(_read(path))
    if "[" not in c and "..." not in c
]


def test_the_readmes_show_commands():
    assert len(_commands(_read("README.md"))) >= 8


@pytest.mark.parametrize("line", README_COMMANDS)
def test_every_readme_command_parses(line):
    from pipelines import cli

    parser = cli.build_parser()
    try:
        args = parser.parse_args(_argv(line))
    except SystemExit as e:  # argparse's way of refusing (or of answering --version)
        if e.code == 0 and _argv(line) == ["--version"]:
            return
        pytest.fail(f"{line!r} does not parse (exit {e.code})")
    assert callable(args.func)


def test_a_command_that_does_not_parse_is_caught():
    from pipelines import cli

    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(_argv("tfxopt run --model m --examples e --no-such-flag"))


def _links(path: str) -> list[str]:
    text = re.sub(r"```.*?```", "", _read(path), flags=re.S)
    return re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)


@pytest.mark.parametrize("path", _markdown_files())
def test_every_relative_link_resolves(path):
    for link in _links(path):
        if "://" in link or link.startswith("mailto:"):
            continue
        target = os.path.normpath(os.path.join(os.path.dirname(path), link))
        if target in PLANNED_DOCS:
            continue
        assert os.path.exists(os.path.join(REPO_ROOT, target)), f"{path}: {link}"


def test_the_readme_is_a_map():
    readme = _read("README.md")
    assert len(readme.splitlines()) <= 250
    for heading in ("## Two commands", "## Your own model in five minutes", "## Run on Kubeflow",
                    "## Where to read more"):  # fmt: skip
        assert f"\n{heading}\n" in readme, heading
    assert "make demo" in readme and "make test" in readme
    index = _read("docs/index.md")
    for doc in sorted(PLANNED_DOCS):
        name = os.path.basename(doc)
        assert f"(docs/{name})" in readme, name
        assert f"({name})" in index, name
    # no internal issue numbers in the user's docs
    for path in _markdown_files():
        assert not re.search(r"\bissue #?\d+", _read(path), re.I), path
