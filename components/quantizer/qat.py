"""Quantization-aware training for the Quantizer's QAT modes (qat, pqat, cqat, pcqat).

The fake-quant copy of the model is built with ``tfmot.quantization.keras`` (the collaborative
schemes keep the input's sparsity and/or clusters) and fine-tuned; the float model holding the
QAT-learned weights is what travels beside the flatbuffer as ``Format-Serving``.
"""

from __future__ import annotations

import logging

import numpy as np

from components.common import legacy_keras, training
from components.common.errors import ModelInputError
from components.common.examples import DataConfig
from components.quantizer.config import QuantizerConfig

log = logging.getLogger(__name__)


def check_support(model, config: QuantizerConfig) -> None:
    """Names the layers tfmot cannot quantize, before any training starts.

    Raises:
      ModelInputError: a subclassed model, Lambda layers, or layers tfmot cannot quantize.
    """
    import tf_keras

    if not (isinstance(model, tf_keras.Sequential) or getattr(model, "_is_graph_network", False)):
        raise ModelInputError(
            f"mode {config.mode!r} needs a Sequential or functional tf_keras model; "
            f"{type(model).__name__} is subclassed. Rebuild it with the functional API, or use a "
            "post-training mode (full_int8, int16x8)."
        )
    lambdas = [x.name for x in model.layers if isinstance(x, tf_keras.layers.Lambda)]
    if lambdas:
        # tfmot rebuilds the model from its config, and tf_keras refuses to deserialize Python
        # code from a Lambda config (safe mode), excluded or not.
        raise ModelInputError(
            f"mode {config.mode!r}: Lambda layer(s) {lambdas} cannot go through quantization-aware "
            "training (tfmot rebuilds the model from its config, which a Lambda does not survive "
            "safely). Rewrite them as registered custom layers, or use a post-training mode "
            "(full_int8 with exclude_layers)."
        )
    default = scheme("qat").get_quantize_registry()
    registry = scheme(config.mode).get_quantize_registry()
    unsupported = []
    for layer in model.layers:
        if isinstance(layer, tf_keras.layers.InputLayer) or layer.name in config.exclude_layers:
            continue
        if not (default.supports(layer) and registry.supports(layer)):
            unsupported.append(f"{layer.name} ({type(layer).__name__})")
    if unsupported:
        raise ModelInputError(
            f"mode {config.mode!r}: tfmot cannot quantize layer(s) {', '.join(unsupported)}. "
            "Leave them in float with quantizer.exclude_layers, or use a post-training mode."
        )


def scheme(mode: str):
    import tensorflow_model_optimization as tfmot

    combine = tfmot.experimental.combine
    if mode == "pqat":
        return combine.Default8BitPrunePreserveQuantizeScheme()
    if mode == "cqat":
        return combine.Default8BitClusterPreserveQuantizeScheme()
    if mode == "pcqat":
        return combine.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=True)
    return tfmot.quantization.keras.default_8bit.Default8BitQuantizeScheme()


def _annotate(model, exclude: list[str]):
    """The model with every layer but ``exclude`` annotated for quantization (weights kept)."""
    import tensorflow_model_optimization as tfmot
    import tf_keras

    quant = tfmot.quantization.keras
    if not exclude:
        return quant.quantize_annotate_model(model)

    def annotate(layer):
        copy = layer.__class__.from_config(layer.get_config())
        return copy if layer.name in exclude else quant.quantize_annotate_layer(copy)

    annotated = tf_keras.models.clone_model(model, clone_function=annotate)
    annotated.set_weights(model.get_weights())
    return annotated


def train(model, examples_uri: str, data: DataConfig, config: QuantizerConfig, args=None):
    """Builds the fake-quant model for the mode and fine-tunes it; returns (model, fit record)."""
    import tensorflow_model_optimization as tfmot
    import tf_keras

    from components.common import distillation, optimization

    tuning = config.fine_tuning
    legacy_keras.skip_autograph_for_tf_keras()
    train_ds, eval_ds, _ = optimization.datasets(examples_uri, data, model, tuning)
    tf_keras.utils.set_random_seed(tuning.seed)
    if args is None:
        args = training.CompileArgs.default(training.classifier_task(model))
    strategy = training.make_local_strategy(tuning.strategy)
    with strategy.scope():
        try:
            qat_model = tfmot.quantization.keras.quantize_apply(
                _annotate(model, config.exclude_layers), scheme(config.mode)
            )
        except (ValueError, RuntimeError) as e:
            raise ModelInputError(
                f"mode {config.mode!r}: tfmot could not build the quantization-aware model: "
                f"{str(e)[:400]}. Leave the layer in float with quantizer.exclude_layers."
            ) from None
        # With fine_tuning.distillation, the input model guides the QAT model as a teacher.
        trainer = distillation.guided(qat_model, model, tuning, args.task)
        # The QAT wrapper hides the output activation, so the loss is chosen from the input.
        training.compile_for_task(trainer, tuning, args)
    validation = eval_ds if tuning.early_stopping_patience else None
    fit = training.fit(
        trainer, train_ds, validation, tuning, name=f"quantizer[{config.mode}]", task=args.task
    )
    fit["teacher"] = training.teacher_record(tuning)
    return qat_model, fit


def _short_name(weight) -> str:
    return weight.name.split("/")[-1].split(":")[0]


def float_model_with_qat_weights(input_model, qat_model):
    """The input architecture holding the weights QAT computes with, or None if they don't map.

    The weights are the ones the fake-quant ops see at inference: the trained float variables,
    masked where a sparsity-preserving quantizer masks them (cluster-preserving quantizers
    already write clustered values into the variables). So zeros and clusters the flatbuffer
    keeps are in this model too.
    """
    import tf_keras

    by_layer: dict[str, dict[str, np.ndarray]] = {}
    for layer in qat_model.layers:
        inner = getattr(layer, "layer", None)
        if inner is None:
            by_layer[layer.name] = {_short_name(w): w.numpy() for w in layer.weights}
            continue
        # The wrapper takes the quantized weights (kernels) out of the inner layer's weights.
        values = {_short_name(w): w.numpy() for w in inner.weights}
        for weight, _, qvars in getattr(layer, "_weight_vars", []):
            value = weight.numpy()
            if isinstance(qvars, dict) and "sparsity_mask" in qvars:
                value = value * np.asarray(qvars["sparsity_mask"], dtype=value.dtype)
            values[_short_name(weight)] = value
        by_layer[inner.name] = values
    float_model = tf_keras.models.clone_model(input_model)
    for layer in float_model.layers:
        if not layer.weights:
            continue
        found = by_layer.get(layer.name, {})
        values = [found.get(_short_name(w)) for w in layer.weights]
        if any(
            v is None or v.shape != tuple(w.shape)
            for v, w in zip(values, layer.weights, strict=True)
        ):
            log.warning("QAT weights of layer %r do not map onto the input model", layer.name)
            return None
        layer.set_weights(values)
    return float_model
