"""One name per concept: every shared key, file name and property name is defined once, in
components/common/keys.py, and the model-in/model-out components share one contract."""

from __future__ import annotations

import ast
import pathlib

import pytest

from components.common import keys

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Owned by another branch while this one lands; the lead points them at keys.py at merge.
NOT_YET: set[str] = set()


def _string_constants(path: pathlib.Path) -> dict[str, str]:
    """Module-level ``NAME = "text"`` assignments of a file."""
    out = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
            if (
                isinstance(target, ast.Name)
                and target.id.isupper()
                and isinstance(value, ast.Constant)
                and isinstance(value.value, str)
            ):
                out[target.id] = value.value
    return out


def test_the_keys_module_imports_nothing():
    tree = ast.parse(pathlib.Path(keys.__file__).read_text())
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]


def test_each_name_in_the_keys_module_says_one_thing():
    values = _string_constants(pathlib.Path(keys.__file__))
    assert len(values) >= 40
    assert len(set(values.values())) == len(values), "two names for one value"


def test_no_other_module_defines_a_shared_name_again():
    shared = set(_string_constants(pathlib.Path(keys.__file__)).values())
    again = []
    for package in ("components", "pipelines"):
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if relative == "components/common/keys.py" or relative in NOT_YET:
                continue
            again += [
                f"{relative}: {name} = {value!r}"
                for name, value in _string_constants(path).items()
                if value in shared
            ]
    assert again == [], "import these from components.common.keys"


@pytest.mark.parametrize(
    "module, spec",
    [
        ("components.pruner.component", "PrunerSpec"),
        ("components.clusterer.component", "ClustererSpec"),
        ("components.quantizer.component", "QuantizerSpec"),
        ("components.distiller.component", "DistillerSpec"),
    ],
)
def test_model_in_model_out_components_share_one_contract(module, spec):
    import importlib

    cls = getattr(importlib.import_module(module), spec)
    assert set(cls.INPUTS) == {keys.MODEL_KEY, keys.EXAMPLES_KEY}
    assert set(cls.OUTPUTS) == {keys.OPTIMIZED_MODEL_KEY}


@pytest.mark.parametrize(
    "module",
    [
        "components.pruner.pruner",
        "components.clusterer.clusterer",
        "components.quantizer.quantizer",
        "components.distiller.distiller",
    ],
)
def test_model_in_model_out_cores_share_one_entry_point(module):
    import importlib
    import inspect

    run = importlib.import_module(module).run
    names = list(inspect.signature(run).parameters)[:5]
    assert names == ["model_uri", "examples_uri", "output_uri", "config", "data"]
