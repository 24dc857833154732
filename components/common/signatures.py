"""The serving interface of a model, kept through every step: read, rebuilt, verified.

TF Serving clients call a model by its SavedModel's signatures (keys, input and output names,
dtypes, shapes). A model exported as TFX's templates export it has a ``serving_default`` that takes
serialized ``tf.Example``s, parses them and calls the Keras model; saving the optimised Keras
model with its own call as ``serving_default`` would break every such client at promotion. So
each step that writes a new SavedModel rebuilds every signature of its input around the new
model, by kind:

- ``model_call``: the signature is the model's call (inputs named like the model's, in its dtypes
  and shapes): traced again from the new model, the input's output keys kept.
- ``parse_example``: the signature parses serialized tf.Examples (``ParseExampleV2``) and feeds
  the parsed features to the model: the feature spec (keys, dtypes, shapes, defaults) is read from
  the signature's graph and the same parsing is put in front of the new model.
- ``transform``: the signature parses raw tf.Examples, applies a TFX Transform graph
  (``model.tft_layer``, as TFX's templates export a Trainer fed transformed examples) and feeds
  the transformed features to the model: the raw spec is read from its graph, the Transform graph
  from ``data.transform_graph`` or the SavedModel (:mod:`components.common.transform`), and the
  same parse and Transform are put in front of the new model. Verified on raw examples
  (``data.raw_examples`` when the Examples are the transformed ones).
- ``hook``: anything else (post-processing, several outputs): the function
  users already have in their Trainer module file, ``serving_signatures(model)`` (or
  ``serving_signatures(model, original)``, ``original`` being the input SavedModel loaded with
  ``tf.saved_model.load``, e.g. for its ``tft_layer``) in ``data.module_file``, returning
  ``{signature key: tf.function with an input_signature}``.

Verified before anything is written, on serialized eval examples: a rebuilt wrapper (parse or
hook) around the *input* model must give what the input's own signature gives (so the wrapper
was read right), and every signature of the new model must return the same keys, dtypes and
shapes as the input's. A signature that cannot be rebuilt is an error naming it and the hook,
raised at preflight.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field

from components.common import serving_specs
from components.common.errors import ModelInputError
from components.common.serving_calls import (  # noqa: F401 - re-exported: the callers' API
    VERIFY_EXAMPLES,
    _compare,
    _eval_records,
    _layout,
    _outputs,
    _scale,
    serialize_inputs,
    serving_feeder,
    serving_records,
)
from components.common.serving_specs import (  # noqa: F401 - re-exported: the callers' API
    TensorInfo,
    read_parse_spec,
)
from components.common.serving_specs import feeds_from_features as _feeds_from_features
from components.common.serving_specs import model_inputs as _model_inputs
from components.common.serving_specs import parse_features as _parse_features
from components.common.serving_specs import spec_problem as _spec_problem
from components.common.serving_specs import tensor_info as _tensor_info

HOOK_NAME = "serving_signatures"
MODEL_CALL, PARSE_EXAMPLE, TRANSFORM, HOOK = "model_call", "parse_example", "transform", "hook"
# A rebuilt wrapper around the input model gives what the input's signature gives, to float noise.
WRAPPER_TOLERANCE = 1e-5


@dataclass(frozen=True)
class Signature:
    """One signature of the input SavedModel and how it is rebuilt."""

    key: str
    inputs: dict
    outputs: dict
    kind: str = MODEL_CALL
    feature_spec: dict = field(
        default_factory=dict
    )  # PARSE_EXAMPLE, TRANSFORM: key -> (dtype, shape, default)
    transform_graph: str | None = None  # TRANSFORM: the TransformGraph directory it reapplies
    transform_source: str | None = None  # TRANSFORM: where that graph came from

    def to_dict(self) -> dict:
        record = {
            "key": self.key,
            "kind": self.kind,
            "inputs": {n: t.to_dict() for n, t in self.inputs.items()},
            "outputs": {n: t.to_dict() for n, t in self.outputs.items()},
        }
        if self.feature_spec:
            record["features"] = {
                k: {"dtype": d, "shape": list(s), "default": default is not None}
                for k, (d, s, default) in self.feature_spec.items()
            }
        if self.transform_source:
            record["transform_graph"] = self.transform_source
        return record


def read(saved_model_dir: str) -> dict[str, Signature]:
    """The SavedModel's signatures, from ``saved_model.pb`` alone (kinds not settled yet)."""
    from tensorflow.python.saved_model import loader_impl

    proto = loader_impl.parse_saved_model(saved_model_dir)
    signatures = {}
    for key, sig in sorted(proto.meta_graphs[0].signature_def.items()):
        if key.startswith("__"):  # __saved_model_init_op
            continue
        signatures[key] = Signature(
            key,
            {n: _tensor_info(n, i) for n, i in sorted(sig.inputs.items())},
            {n: _tensor_info(n, i) for n, i in sorted(sig.outputs.items())},
        )
    return signatures


def is_model_call(signature: Signature, model) -> bool:
    """True when the signature takes the model's inputs (names, dtypes, shapes past the batch)
    and gives as many outputs as the model, of the same shapes."""
    inputs = _model_inputs(model)
    if sorted(signature.inputs) != sorted(t.name for t in inputs):
        return False
    for t in inputs:
        got = signature.inputs[t.name]
        if got.dtype != t.dtype or got.shape[1:] != t.shape[1:]:
            return False
    outputs = sorted(info.shape[1:] for info in signature.outputs.values())
    model_outputs = sorted(
        tuple(-1 if d is None else int(d) for d in t.shape[1:]) for t in model.outputs
    )
    return outputs == model_outputs


# ----------------------------------------------------------------------------- parse_example


def _parse_signature(model, signature: Signature, image_scale: float | None = 1 / 255):
    """A concrete function: serialized tf.Examples -> the spec's parsing -> ``model``."""
    import tensorflow as tf

    (input_name,) = signature.inputs
    (output_key,) = signature.outputs
    features = _parse_features(signature.feature_spec)

    def serve(serialized):
        parsed = tf.io.parse_example(serialized, features)
        feeds = _feeds_from_features(model, parsed, image_scale)
        return {output_key: model(feeds)}

    spec = tf.TensorSpec([None], tf.string, name=input_name)
    return tf.function(serve, autograph=False).get_concrete_function(spec)


def _call_signature(model, signature: Signature):
    """The model's call with the signature's input names and output keys."""
    import tensorflow as tf

    from components.common.conversion import input_names

    names = input_names(model)
    specs = [
        tf.TensorSpec([None, *t.shape[1:]], t.dtype, name=name)
        for name, t in zip(names, model.inputs, strict=True)
    ]
    # Output keys: by shape, in the model's output order (a single output: its one key).
    keys = list(signature.outputs)
    if len(keys) > 1:
        by_shape = {info.shape[1:]: key for key, info in signature.outputs.items()}
        keys = [
            by_shape[tuple(-1 if d is None else int(d) for d in t.shape[1:])] for t in model.outputs
        ]

    def call(*inputs):
        outputs = model(list(inputs) if len(inputs) > 1 else inputs[0], training=False)
        outputs = outputs if isinstance(outputs, list | tuple) else [outputs]
        return dict(zip(keys, outputs, strict=True))

    return tf.function(call, autograph=False).get_concrete_function(*specs)


# ----------------------------------------------------------------------------- the hook


def load_hook(module_file: str | None):
    """``serving_signatures`` of ``data.module_file``, or None."""
    if not module_file or not os.path.isfile(module_file):
        return None
    spec = importlib.util.spec_from_file_location("tfxopt_serving_module", module_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, HOOK_NAME, None)


def _call_hook(hook, model, original) -> dict:
    import inspect

    takes_original = len(inspect.signature(hook).parameters) >= 2
    made = hook(model, original) if takes_original else hook(model)
    if not isinstance(made, dict):
        raise ModelInputError(
            f"{HOOK_NAME}(model) returned {type(made).__name__}: return a dict of signature key "
            "-> tf.function (with an input_signature) or concrete function."
        )
    functions = {}
    for key, fn in made.items():
        if hasattr(fn, "get_concrete_function"):
            try:
                fn = fn.get_concrete_function()
            except (TypeError, ValueError) as e:
                raise ModelInputError(
                    f"{HOOK_NAME}(model)[{key!r}] needs an input_signature (tf.function("
                    f"input_signature=[tf.TensorSpec(...)])): {e}"
                ) from None
        functions[key] = fn
    return functions


# ----------------------------------------------------------------------------- the interface


@dataclass
class ServingInterface:
    """The input model's signatures, how each is rebuilt, and examples to verify them on."""

    source_dir: str
    signatures: dict[str, Signature]
    module_file: str | None = None
    serialized: list = field(default_factory=list)  # serialized eval examples
    raw_serialized: list = field(default_factory=list)  # raw ones, for transform signatures
    image_scale: float | None = 1 / 255  # data.image_scale: how encoded images are decoded
    checked: dict = field(default_factory=dict)  # key -> the wrapper check's max abs diff

    @property
    def only_model_calls(self) -> bool:
        return all(s.kind == MODEL_CALL for s in self.signatures.values())

    def describe(self) -> list[dict]:
        described = []
        for key, signature in self.signatures.items():
            entry = signature.to_dict()
            if key in self.checked:
                entry["wrapper_max_abs_diff"] = self.checked[key]
            described.append(entry)
        return described

    def build(self, model, original=None, attach: bool = False) -> dict:
        """Every signature rebuilt around ``model``: key -> concrete function.

        Args:
          attach: the functions are to be saved with ``model``: a Transform layer they apply
            is attached to it (``model.tft_layer``) so its graph and tables are saved too.
        """
        from components.common import transform as transform_lib

        hooked = {}
        if any(s.kind == HOOK for s in self.signatures.values()):
            hooked = _call_hook(load_hook(self.module_file), model, original or self._original())
        built, layers = {}, {}
        for key, signature in self.signatures.items():
            if signature.kind == MODEL_CALL:
                built[key] = _call_signature(model, signature)
            elif signature.kind == PARSE_EXAMPLE:
                built[key] = _parse_signature(model, signature, self.image_scale)
            elif signature.kind == TRANSFORM:
                directory = signature.transform_graph
                if directory not in layers:
                    layers[directory] = transform_lib.make_layer(directory)
                    if attach:
                        transform_lib.attach(model, layers[directory])
                built[key] = serving_specs.rebuilt_transform_signature(
                    model, signature, layers[directory], self.image_scale
                )
            else:
                built[key] = hooked[key]
        return built

    def _original(self):
        from components.common import model_io

        return model_io.load_saved_model(self.source_dir)

    def _feeds(self, signature: Signature) -> dict | None:
        """Inputs for a signature: the serialized examples for one string input (the raw ones
        for a transform signature), else None."""
        import tensorflow as tf

        if len(signature.inputs) == 1:
            (info,) = signature.inputs.values()
            records = self.serialized
            if signature.kind == TRANSFORM and self.raw_serialized:
                records = self.raw_serialized
            if info.dtype == "string" and info.shape in ((-1,), ()):
                return {info.name: tf.constant(records)}
        return None

    def check_wrappers(self, model) -> None:
        """The rebuilt wrappers around the input ``model`` give what the input's signatures give.

        Raises:
          ModelInputError: naming the signature, the difference and the hook.
        """
        if self.only_model_calls or not self.serialized:
            return
        original = self._original()
        built = self.build(model, original)
        for key, signature in self.signatures.items():
            if signature.kind == MODEL_CALL:
                continue
            feeds = self._feeds(signature)
            if feeds is None:
                continue
            expected = _outputs(original.signatures[key], feeds, key)
            got = _outputs(built[key], feeds, key)
            diff = _compare(expected, got)
            if diff is None or diff > WRAPPER_TOLERANCE * max(1.0, _scale(expected)):
                how = (
                    f"{HOOK_NAME}(model) in {self.module_file}"
                    if signature.kind == HOOK
                    else "the signature rebuilt from its ParseExample spec"
                )
                shown = (
                    "different keys, dtypes or shapes"
                    if diff is None
                    else f"max abs diff {diff:.3g}"
                )
                raise ModelInputError(
                    f"serving signature {key!r}: {how} does not reproduce the input's signature "
                    f"on {len(self.serialized)} eval examples ({shown}). Define "
                    f"{HOOK_NAME}(model) in data.module_file returning {{{key!r}: tf.function}} "
                    "exactly as the Trainer's module file exports it."
                )
            self.checked[key] = float(diff)

    def signatures_for(self, model) -> dict:
        """Every signature rebuilt around ``model`` (an optimised copy of the input), checked to
        return the input's keys, dtypes and shapes on the eval examples.

        Raises:
          ModelInputError: naming the signature and what differs.
        """
        built = self.build(model, attach=True)
        if not self.serialized:
            return built
        original = None
        for key, signature in self.signatures.items():
            feeds = self._feeds(signature)
            if feeds is None:
                continue
            original = original or self._original()
            expected = _outputs(original.signatures[key], feeds, key)
            got = _outputs(built[key], feeds, key)
            if _compare(expected, got) is None:
                raise ModelInputError(
                    f"serving signature {key!r} rebuilt around the optimised model returns "
                    f"{_layout(got)}, the input's returns {_layout(expected)}: its clients would "
                    "break. Check the optimisation step's output layers."
                )
        return built


def plan(
    saved_model_dir: str,
    model,
    module_file: str | None = None,
    transform_graph: str | None = None,
) -> ServingInterface:
    """Reads the SavedModel's signatures and settles how each is rebuilt around ``model``.

    Args:
      transform_graph: ``data.transform_graph``, the Transform graph a transform signature is
        rebuilt with (default: the one the SavedModel embeds).
    Raises:
      ModelInputError: a signature that is neither the model's call, nor a readable tf.Example
        parse (with or without a Transform graph), nor given by the hook: naming it and the hook.
    """
    from components.common import transform as transform_lib

    signatures = read(saved_model_dir)
    hook = load_hook(module_file)
    hooked_keys = None
    settled = {}
    loaded = None
    graph, graph_read = None, False
    for key, signature in signatures.items():
        if is_model_call(signature, model):
            settled[key] = signature
            continue
        if hook is not None:
            if hooked_keys is None:
                from components.common import model_io

                loaded = loaded or model_io.load_saved_model(saved_model_dir)
                hooked_keys = set(_call_hook(hook, model, loaded))
            if key in hooked_keys:
                settled[key] = Signature(key, signature.inputs, signature.outputs, HOOK)
                continue
        why = _parse_problem(signature)
        if why is None:
            from components.common import model_io

            loaded = loaded or model_io.load_saved_model(saved_model_dir)
            spec = read_parse_spec(loaded.signatures[key])
            if not graph_read:
                graph = transform_lib.find(saved_model_dir, loaded, transform_graph)
                graph_read = True
            if graph is not None and spec is not None and set(spec) <= set(graph.raw_keys):
                why = serving_specs.transform_inputs_problem(graph, model)
                if why is None:
                    settled[key] = Signature(
                        key,
                        signature.inputs,
                        signature.outputs,
                        TRANSFORM,
                        spec,
                        graph.directory,
                        graph.source,
                    )
                    continue
            else:
                why = _spec_problem(spec, model)
                if why is None:
                    settled[key] = Signature(
                        key, signature.inputs, signature.outputs, PARSE_EXAMPLE, spec
                    )
                    continue
                if spec is not None and graph is None:
                    why += (
                        "; if it applies a tf.Transform graph, set "
                        f"{transform_lib.CONFIG_KEY} to the Transform's transform_graph output"
                    )
        inputs = ", ".join(f"{n} {t.dtype} {list(t.shape)}" for n, t in signature.inputs.items())
        raise ModelInputError(
            f"serving signature {key!r} of {saved_model_dir!r} (inputs: {inputs}) wraps the model "
            f"in a way that cannot be rebuilt around the optimised model ({why}). Define "
            f"{HOOK_NAME}(model) in data.module_file returning {{{key!r}: tf.function}} (the "
            "function your Trainer module file exports it with)."
        )
    return ServingInterface(saved_model_dir, settled, module_file)


def _parse_problem(signature: Signature) -> str | None:
    if len(signature.inputs) != 1:
        return f"{len(signature.inputs)} inputs that are not the model's"
    (info,) = signature.inputs.values()
    if info.dtype != "string":
        return (
            f"input {info.name!r} is {info.dtype}, not the model's inputs nor serialized examples"
        )
    if len(signature.outputs) != 1:
        return f"{len(signature.outputs)} outputs from one model output"
    return None


def interface_for(model_uri: str, model, examples_uri: str | None, data) -> ServingInterface:
    """The serving interface of the model at ``model_uri`` to keep in a step's output, with
    serialized eval examples to verify it on (only read when a signature wraps the model)."""
    from components.common import model_io

    interface = plan(
        model_io.serving_model_dir(model_uri), model, data.module_file, data.transform_graph
    )
    interface.image_scale = data.image_scale
    if not interface.only_model_calls and examples_uri is not None:
        from components.common import transform as transform_lib

        interface.serialized = _eval_records(examples_uri, data)
        transforms = [s for s in interface.signatures.values() if s.kind == TRANSFORM]
        if transforms:
            interface.raw_serialized = serving_records(examples_uri, data)
            where = data.raw_examples or examples_uri
            for signature in transforms:
                transform_lib.check_raw_examples(
                    signature, interface.raw_serialized, where, data.raw_examples
                )
    return interface
