"""Import path of the ``tfxopt.*`` artifact types, as TFX's Kubeflow v2 container entrypoint needs it.

KFP v2 needs custom artifact type names with a namespace (``tfxopt.ModelProfile``). TFX's container
entrypoint (``kubeflow_v2_run_executor``) rebuilds a custom-typed artifact by importing its type name
as a Python path (``import_class_by_path('tfxopt.ModelProfile')``), so ``tfxopt`` must be an
importable module exposing every ``tfxopt.`` type under its class name. The types themselves live in
``components.common.types``; this module only resolves them, lazily.
"""

from __future__ import annotations


def __getattr__(name: str):
    from components.common import types

    cls = getattr(types, name, None)
    if cls is None or getattr(cls, "TYPE_NAME", None) != f"{__name__}.{name}":
        raise AttributeError(f"module {__name__!r} has no artifact type {name!r}")
    return cls
