"""A zoo of small models real teams bring, each with generated data it learns from.

Each builder returns a :class:`ZooCase`: a tf_keras model trained briefly (30 epochs of 192
examples) on generated data, and that data as TFX Examples (``Split-train``/``Split-eval``,
gzipped tf.Example). The data has structure (labels depend on the features), so fine-tuning and
the gate see real metrics, but nothing is downloaded and every case builds in seconds.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

TRAIN, EVAL = 192, 96
EPOCHS = 30  # a few seconds: enough for every model to learn its generated task


@dataclass
class ZooCase:
    """One zoo model: where its SavedModel and Examples are, and what to expect."""

    name: str
    model_dir: str
    examples_dir: str
    task: str  # the task inference should find
    config: dict = field(default_factory=dict)  # overrides of the generic config
    int8_exclude: list[str] = field(default_factory=list)  # layers full_int8 leaves in float
    expect_error: str | None = None  # a clear preflight error instead of a run


def _feature(values: np.ndarray):
    import tensorflow as tf

    if isinstance(values, bytes):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[values]))
    values = np.asarray(values).reshape(-1)
    if values.dtype == object or values.dtype.kind == "S":
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))
    if np.issubdtype(values.dtype, np.integer):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values.tolist()))
    return tf.train.Feature(float_list=tf.train.FloatList(value=values.astype(float).tolist()))


def write_split(path: str, features: dict[str, np.ndarray]) -> None:
    """Writes one gzipped TFRecord file: example i holds ``features[name][i]`` for every name."""
    import tensorflow as tf

    os.makedirs(os.path.dirname(path), exist_ok=True)
    n = len(next(iter(features.values())))
    with tf.io.TFRecordWriter(path, options="GZIP") as writer:
        for i in range(n):
            example = tf.train.Example(
                features=tf.train.Features(
                    feature={name: _feature(values[i]) for name, values in features.items()}
                )
            )
            writer.write(example.SerializeToString(deterministic=True))


def write_examples(root: str, make: Callable[[int, np.random.Generator], dict]) -> str:
    """Train and eval splits of ``make(n, rng)`` (a dict of arrays) under ``root``."""
    rng = np.random.default_rng(0)
    for split, n in (("train", TRAIN), ("eval", EVAL)):
        write_split(os.path.join(root, f"Split-{split}", "data.gz"), make(n, rng))
    return root


def _fit_and_save(model, data: dict, inputs: list[str], label: str, loss, path: str, **compile):
    import tf_keras

    x = [data[k] for k in inputs]
    y = data[label]
    model.compile(tf_keras.optimizers.Adam(3e-3), loss=loss, **compile)
    model.fit(x if len(x) > 1 else x[0], y, epochs=EPOCHS, batch_size=32, verbose=0)
    model.save(path, save_format="tf")
    return path


def _trained_case(
    root: str, name: str, task: str, make, model, inputs: list[str], label: str, loss, **options
) -> ZooCase:
    """Writes ``make``'s Examples under ``root/examples``, trains ``model`` on ``make``'s train
    data and saves it under ``root/model``.

    ``options``: ``shapes`` (feature name -> the shape its arrays take for training), ``compile``
    (more ``model.compile`` arguments), and the rest :class:`ZooCase`'s optional fields.
    """
    examples = write_examples(os.path.join(root, "examples"), make)
    data = make(TRAIN, np.random.default_rng(0))
    for key, shape in options.pop("shapes", {}).items():
        data[key] = data[key].reshape(-1, *shape)
    path = os.path.join(root, "model")
    _fit_and_save(model, data, inputs, label, loss, path, **options.pop("compile", {}))
    return ZooCase(name, path, examples, task, **options)


def _images(n, rng, size=64):
    x = rng.random((n, size), dtype=np.float32)
    return x


# ----------------------------------------------------------------------------- the models


def binary_sigmoid(root: str) -> ZooCase:
    """One sigmoid unit, 0/1 labels (label: is the image's mean brighter than 0.5?)."""
    import tf_keras

    tf_keras.utils.set_random_seed(0)

    def make(n, rng):
        x = _images(n, rng)
        return {"image": x, "label": (x[:, :32].mean(1) > x[:, 32:].mean(1)).astype(np.int64)}

    layers = tf_keras.layers
    model = tf_keras.Sequential(
        [
            layers.Input((64,), name="image"),
            layers.Dense(32, activation="relu"),
            layers.Dense(1, activation="sigmoid"),
        ]
    )
    return _trained_case(
        root,
        "binary_sigmoid",
        "binary",
        make,
        model,
        ["image"],
        "label",
        "binary_crossentropy",
        compile={"metrics": ["accuracy"]},
    )


def multilabel_sigmoid(root: str) -> ZooCase:
    """Five sigmoid units, five 0/1 labels per example."""
    import tf_keras

    tf_keras.utils.set_random_seed(0)

    def make(n, rng):
        x = _images(n, rng)
        labels = (x.reshape(n, 4, 16)[:, :, :].mean(2) > 0.5).astype(np.int64)
        labels = np.concatenate([labels, (x[:, :1] > 0.5).astype(np.int64)], axis=1)
        return {"image": x, "tags": labels}

    layers = tf_keras.layers
    model = tf_keras.Sequential(
        [
            layers.Input((64,), name="image"),
            layers.Dense(32, activation="relu"),
            layers.Dense(5, activation="sigmoid"),
        ]
    )
    return _trained_case(
        root,
        "multilabel_sigmoid",
        "multilabel",
        make,
        model,
        ["image"],
        "tags",
        "binary_crossentropy",
        config={"data": {"label_key": "tags"}},
    )


def regression_linear(root: str) -> ZooCase:
    """One linear unit, a float label."""
    import tf_keras

    tf_keras.utils.set_random_seed(0)

    def make(n, rng):
        x = _images(n, rng, 16)
        value = (x @ np.linspace(-1, 1, 16) + 0.1 * rng.standard_normal(n)).astype(np.float32)
        return {"features": x, "value": value}

    layers = tf_keras.layers
    model = tf_keras.Sequential(
        [
            layers.Input((16,), name="features"),
            layers.Dense(64, activation="relu"),
            layers.Dense(1),
        ]
    )
    return _trained_case(
        root,
        "regression_linear",
        "regression",
        make,
        model,
        ["features"],
        "value",
        "mse",
        config={"data": {"label_key": "value"}},
    )


def unet_segmentation(root: str) -> ZooCase:
    """A U-Net-style encoder-decoder on 16x16 images, a 2-class softmax per pixel, 256 int labels."""
    import tf_keras

    tf_keras.utils.set_random_seed(0)

    def make(n, rng):
        x = rng.random((n, 16, 16, 1), dtype=np.float32)
        mask = (x[..., 0] > 0.5).astype(np.int64).reshape(n, 256)
        return {"pixels": x.reshape(n, 256), "mask": mask}

    layers = tf_keras.layers
    inputs = layers.Input((16, 16, 1), name="pixels")
    down = layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    pooled = layers.MaxPooling2D()(down)
    middle = layers.Conv2D(16, 3, padding="same", activation="relu")(pooled)
    up = layers.UpSampling2D()(middle)
    merged = layers.Concatenate()([up, down])
    decoded = layers.Conv2D(8, 3, padding="same", activation="relu")(merged)
    outputs = layers.Conv2D(2, 1, activation="softmax")(decoded)
    model = tf_keras.Model(inputs, outputs)
    return _trained_case(
        root,
        "unet_segmentation",
        "dense",
        make,
        model,
        ["pixels"],
        "mask",
        "sparse_categorical_crossentropy",
        shapes={"pixels": (16, 16, 1), "mask": (16, 16)},
        config={"data": {"label_key": "mask"}},
    )


def _two_input_model():
    import tf_keras

    layers = tf_keras.layers
    image = layers.Input((64,), name="image")
    aux = layers.Input((4,), name="aux")
    hidden = layers.Dense(32, activation="relu")(image)
    side = layers.Dense(8, activation="relu")(aux)
    merged = layers.Concatenate()([hidden, side])
    return tf_keras.Model([image, aux], layers.Dense(3, activation="softmax")(merged))


def _two_input_make(n, rng):
    image = _images(n, rng)
    aux = rng.random((n, 4), dtype=np.float32)
    label = (np.argmax(aux[:, :3], axis=1)).astype(np.int64)
    return {"aux": aux, "image": image, "label": label}


def two_inputs_named(root: str, feature_keys: list[str] | None = None) -> ZooCase:
    """Inputs ``image`` (64) and ``aux`` (4), features named the same (sorted order: aux first)."""
    import tf_keras

    tf_keras.utils.set_random_seed(0)
    config = {"data": {"feature_keys": feature_keys}} if feature_keys else {}
    name = "two_inputs_keys" if feature_keys else "two_inputs_named"
    return _trained_case(
        root,
        name,
        "multiclass",
        _two_input_make,
        _two_input_model(),
        ["image", "aux"],
        "label",
        "sparse_categorical_crossentropy",
        config=config,
    )


def tiny_layers(root: str) -> ZooCase:
    """Layers with fewer weights than clusters (a 3x3 bottleneck, a 3-unit head)."""
    import tf_keras

    tf_keras.utils.set_random_seed(0)

    def make(n, rng):
        x = _images(n, rng, 8)
        return {"x": x, "label": (np.argmax(x[:, :3], axis=1)).astype(np.int64)}

    layers = tf_keras.layers
    model = tf_keras.Sequential(
        [
            layers.Input((8,), name="x"),
            layers.Dense(16, activation="relu", name="wide"),
            layers.Dense(3, activation="relu", name="bottleneck"),
            layers.Dense(3, activation="softmax", name="head"),
        ]
    )
    return _trained_case(
        root,
        "tiny_layers",
        "multiclass",
        make,
        model,
        ["x"],
        "label",
        "sparse_categorical_crossentropy",
    )


def _image_classes(n, rng):
    """8x8 RGB images whose class is the channel that is brighter everywhere."""
    label = rng.integers(0, 3, n).astype(np.int64)
    x = 0.7 * rng.random((n, 8, 8, 3), dtype=np.float32)
    x[np.arange(n), :, :, label] += 0.3
    return {"image": x.reshape(n, 192), "label": label}


def mobilenet_block(root: str) -> ZooCase:
    """Depthwise-separable (MobileNet-style) blocks: DepthwiseConv2D + 1x1 Conv2D + BatchNorm."""
    import tf_keras

    tf_keras.utils.set_random_seed(0)
    layers = tf_keras.layers
    inputs = layers.Input((8, 8, 3), name="image")
    x = layers.Conv2D(16, 3, padding="same", use_bias=False)(inputs)
    x = layers.ReLU(6.0)(layers.BatchNormalization()(x))
    for filters in (16, 32):
        x = layers.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
        x = layers.ReLU(6.0)(layers.BatchNormalization()(x))
        x = layers.Conv2D(filters, 1, use_bias=False)(x)
        x = layers.ReLU(6.0)(layers.BatchNormalization()(x))
    x = layers.GlobalAveragePooling2D()(x)
    model = tf_keras.Model(inputs, layers.Dense(3, activation="softmax")(x))
    return _trained_case(
        root,
        "mobilenet_block",
        "multiclass",
        _image_classes,
        model,
        ["image"],
        "label",
        "sparse_categorical_crossentropy",
        shapes={"image": (8, 8, 3)},
    )


def text_embedding(root: str) -> ZooCase:
    """Embedding + global average pooling over 12 token ids, 2-class softmax."""
    import tf_keras

    tf_keras.utils.set_random_seed(0)

    def make(n, rng):
        tokens = rng.integers(1, 50, (n, 12)).astype(np.int64)
        label = (np.sum(tokens < 25, axis=1) > 6).astype(np.int64)
        return {"tokens": tokens, "label": label}

    layers = tf_keras.layers
    model = tf_keras.Sequential(
        [
            layers.Input((12,), name="tokens"),
            layers.Embedding(50, 16, name="embedding"),
            layers.GlobalAveragePooling1D(),
            layers.Dense(16, activation="relu"),
            layers.Dense(2, activation="softmax"),
        ]
    )
    # The float token ids are CAST to int for the lookup, an op without an int8 kernel: full_int8
    # stops with a message naming the layer to leave in float, as a user would then do.
    return _trained_case(
        root,
        "text_embedding",
        "multiclass",
        make,
        model,
        ["tokens"],
        "label",
        "sparse_categorical_crossentropy",
        int8_exclude=["embedding"],
    )


def residual_bn(root: str) -> ZooCase:
    """A functional residual CNN with BatchNorm; features named ``pixels`` and ``target``."""
    import tf_keras

    tf_keras.utils.set_random_seed(0)

    def make(n, rng):
        data = _image_classes(n, rng)
        return {"pixels": data["image"], "target": data["label"]}

    layers = tf_keras.layers
    inputs = layers.Input((8, 8, 3), name="pixels")
    x = layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    shortcut = x
    x = layers.Conv2D(16, 3, padding="same")(x)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(layers.Add()([x, shortcut]))
    x = layers.GlobalAveragePooling2D()(x)
    model = tf_keras.Model(inputs, layers.Dense(3, activation="softmax")(x))
    return _trained_case(
        root,
        "residual_bn",
        "multiclass",
        make,
        model,
        ["pixels"],
        "target",
        "sparse_categorical_crossentropy",
        shapes={"pixels": (8, 8, 3)},
        config={"data": {"label_key": "target"}},
    )


def multi_output(root: str) -> ZooCase:
    """Two heads (class and value): a clear preflight error, not a crash."""
    import tf_keras

    tf_keras.utils.set_random_seed(0)
    examples = write_examples(
        os.path.join(root, "examples"),
        lambda n, rng: {"image": _images(n, rng), "label": rng.integers(0, 3, n)},
    )
    layers = tf_keras.layers
    inputs = layers.Input((64,), name="image")
    hidden = layers.Dense(16, activation="relu")(inputs)
    model = tf_keras.Model(
        inputs, [layers.Dense(3, activation="softmax")(hidden), layers.Dense(1)(hidden)]
    )
    model.save(os.path.join(root, "model"), save_format="tf")
    return ZooCase(
        "multi_output",
        os.path.join(root, "model"),
        examples,
        "multiclass",
        expect_error="has 2 outputs",
    )


# ----------------------------------------------------------------------------- TFX and sequences


def _token_classes(n, rng, length=16, vocab=40):
    """Token ids whose class says whether low ids (< vocab/2) outnumber high ones."""
    tokens = rng.integers(1, vocab, (n, length)).astype(np.int64)
    return {
        "tokens": tokens,
        "label": (np.sum(tokens < vocab // 2, axis=1) > length // 2).astype(np.int64),
    }


def serve_tf_examples_signature(model, feature_spec: dict, output_key: str = "outputs"):
    """The serving signature TFX's templates export: serialized tf.Examples in (``examples``),
    parsed with the features' spec, the model's output out under ``output_key``."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve_tf_examples_fn(serialized_tf_examples):
        parsed = tf.io.parse_example(serialized_tf_examples, feature_spec)
        return {output_key: model(parsed)}

    return serve_tf_examples_fn


def tfx_template_cnn(root: str) -> ZooCase:
    """A CNN saved the way TFX's templates save a Trainer's model: ``serving_default`` takes
    serialized tf.Examples (``examples``: DT_STRING), parses them and returns ``outputs``."""
    import tensorflow as tf
    import tf_keras

    tf_keras.utils.set_random_seed(0)
    layers = tf_keras.layers
    inputs = layers.Input((192,), name="image")
    x = layers.Reshape((8, 8, 3))(inputs)
    x = layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(32, activation="relu")(x)
    model = tf_keras.Model(inputs, layers.Dense(3, activation="softmax")(x))
    examples = write_examples(os.path.join(root, "examples"), _image_classes)
    data = _image_classes(TRAIN, np.random.default_rng(0))
    model.compile(tf_keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    model.fit(data["image"], data["label"], epochs=EPOCHS, batch_size=32, verbose=0)
    spec = {"image": tf.io.FixedLenFeature([192], tf.float32)}
    path = os.path.join(root, "model")
    model.save(
        path,
        save_format="tf",
        signatures={"serving_default": serve_tf_examples_signature(model, spec)},
    )
    return ZooCase("tfx_template_cnn", path, examples, "multiclass")


def transformer_tokens(root: str) -> ZooCase:
    """A Transformer block over int64 token ids: Embedding (+ positions) -> MultiHeadAttention ->
    LayerNormalization -> feed-forward -> pooling -> softmax."""
    import tf_keras

    tf_keras.utils.set_random_seed(0)
    layers = tf_keras.layers
    inputs = layers.Input((16,), dtype="int64", name="tokens")
    x = layers.Embedding(40, 16, name="embedding")(inputs)
    attention = layers.MultiHeadAttention(num_heads=2, key_dim=8, name="attention")(x, x)
    x = layers.LayerNormalization(name="norm_1")(x + attention)
    ffn = layers.Dense(32, activation="relu", name="ffn_1")(x)
    ffn = layers.Dense(16, name="ffn_2")(ffn)
    x = layers.LayerNormalization(name="norm_2")(x + ffn)
    x = layers.GlobalAveragePooling1D()(x)
    model = tf_keras.Model(inputs, layers.Dense(2, activation="softmax", name="head")(x))
    return _trained_case(
        root,
        "transformer_tokens",
        "multiclass",
        _token_classes,
        model,
        ["tokens"],
        "label",
        "sparse_categorical_crossentropy",
    )


def _token_sequence_case(root: str, name: str, task: str, recurrent, head, loss: str) -> ZooCase:
    """Embedding -> ``recurrent`` -> ``head`` over 16 int64 token ids (:func:`_token_classes`)."""
    import tf_keras

    layers = tf_keras.layers
    model = tf_keras.Sequential(
        [
            layers.Input((16,), dtype="int64", name="tokens"),
            layers.Embedding(40, 16, name="embedding"),
            recurrent,
            head,
        ]
    )
    return _trained_case(root, name, task, _token_classes, model, ["tokens"], "label", loss)


def lstm_binary(root: str) -> ZooCase:
    """Embedding -> LSTM -> one sigmoid unit over int64 token ids."""
    import tf_keras

    tf_keras.utils.set_random_seed(0)
    layers = tf_keras.layers
    return _token_sequence_case(
        root,
        "lstm_binary",
        "binary",
        layers.LSTM(16, name="lstm"),
        layers.Dense(1, activation="sigmoid", name="head"),
        "binary_crossentropy",
    )


def bidirectional_gru(root: str) -> ZooCase:
    """Embedding -> Bidirectional(GRU) -> softmax over int64 token ids (a GRU stays a WHILE loop
    in TFLite: calibrated int8 is refused for it, float32 and dynamic range convert)."""
    import tf_keras

    tf_keras.utils.set_random_seed(0)
    layers = tf_keras.layers
    return _token_sequence_case(
        root,
        "bidirectional_gru",
        "multiclass",
        layers.Bidirectional(layers.GRU(8), name="bigru"),
        layers.Dense(2, activation="softmax", name="head"),
        "sparse_categorical_crossentropy",
    )


def _encoded_image_classes(n, rng):
    """:func:`_image_classes` as PNG bytes under ``image/encoded`` (8x8 RGB, 0-255)."""
    import tensorflow as tf

    data = _image_classes(n, rng)
    pixels = np.clip(np.rint(data["image"].reshape(n, 8, 8, 3) * 255), 0, 255).astype(np.uint8)
    encoded = np.array([tf.io.encode_png(p).numpy() for p in pixels], dtype=object)
    return {"image/encoded": encoded, "label": data["label"]}


def encoded_images(root: str) -> ZooCase:
    """A CNN on decoded pixels whose Examples hold PNG bytes (``image/encoded``) and whose
    serving signature parses and decodes them (pixels / 255), as TFX image pipelines export it."""
    import tensorflow as tf
    import tf_keras

    tf_keras.utils.set_random_seed(0)
    layers = tf_keras.layers
    inputs = layers.Input((8, 8, 3), name="image")
    x = layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(16, activation="relu")(x)
    model = tf_keras.Model(inputs, layers.Dense(3, activation="softmax")(x))
    examples = write_examples(os.path.join(root, "examples"), _encoded_image_classes)
    data = _encoded_image_classes(TRAIN, np.random.default_rng(0))
    pixels = np.stack([tf.io.decode_png(b).numpy() for b in data["image/encoded"]]) / 255.0
    model.compile(tf_keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    model.fit(pixels.astype(np.float32), data["label"], epochs=EPOCHS, batch_size=32, verbose=0)
    spec = {"image/encoded": tf.io.FixedLenFeature([], tf.string)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve(serialized):
        encoded = tf.io.parse_example(serialized, spec)["image/encoded"]
        images = tf.map_fn(
            lambda b: tf.ensure_shape(tf.io.decode_png(b, channels=3), [8, 8, 3]),
            encoded,
            fn_output_signature=tf.uint8,
        )
        return {"outputs": model(tf.cast(images, tf.float32) / 255.0)}

    path = os.path.join(root, "model")
    model.save(path, save_format="tf", signatures={"serving_default": serve})
    return ZooCase("encoded_images", path, examples, "multiclass")


# ----------------------------------------------------------------------------- TFX Transform

TRANSFORM_LABEL = "label"


def _raw_tabular(n, rng):
    """Raw tabular features as a TFX pipeline ingests them: a float ``size`` (any scale), a
    string ``color`` and a float ``age`` to bucketize; the class is read from all three."""
    colors = np.array([b"red", b"green", b"blue"], dtype=object)
    color = rng.integers(0, 3, n)
    size = (50 + 20 * rng.standard_normal(n)).astype(np.float32)
    age = rng.uniform(0, 80, n).astype(np.float32)
    label = np.where(color == 0, 0, np.where(size > 50, 1, 2))
    label = np.where((color != 0) & (age > 60), 0, label).astype(np.int64)
    return {
        "size": size.reshape(n, 1),
        "color": colors[color].reshape(n, 1),
        "age": age.reshape(n, 1),
        TRANSFORM_LABEL: label.reshape(n, 1),
    }


def preprocessing_fn(inputs):
    """The Transform module's preprocessing: z-score, vocabulary, buckets; the label passed on."""
    import tensorflow_transform as tft

    return {
        "size_xf": tft.scale_to_z_score(inputs["size"]),
        "color_xf": tft.compute_and_apply_vocabulary(inputs["color"], vocab_filename="color"),
        "age_xf": tft.bucketize(inputs["age"], 4),
        TRANSFORM_LABEL: inputs[TRANSFORM_LABEL],
    }


def _raw_feature_spec() -> dict:
    import tensorflow as tf

    return {
        "size": tf.io.FixedLenFeature([1], tf.float32),
        "color": tf.io.FixedLenFeature([1], tf.string),
        "age": tf.io.FixedLenFeature([1], tf.float32),
        TRANSFORM_LABEL: tf.io.FixedLenFeature([1], tf.int64),
    }


def _instances(data: dict) -> list[dict]:
    n = len(next(iter(data.values())))
    return [{k: v[i] for k, v in data.items()} for i in range(n)]


def run_transform(root: str, seed: int = 0) -> tuple[str, dict, dict]:
    """What the TFX Transform component does, on generated raw data: analyses the train split,
    writes the TransformGraph (``transform_fn/``, ``transformed_metadata/``, ``metadata/``) under
    ``root/transform_graph``, the raw Examples under ``root/raw_examples`` and the transformed
    Examples (``Transform.outputs['transformed_examples']``) under ``root/examples``.

    Returns:
      The TransformGraph directory, and the transformed train and eval features (numpy).
    """
    import tempfile

    import apache_beam as beam
    import tensorflow as tf
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

    rng = np.random.default_rng(seed)
    raw = {"train": _raw_tabular(TRAIN, rng), "eval": _raw_tabular(EVAL, rng)}
    for split, data in raw.items():
        write_split(os.path.join(root, "raw_examples", f"Split-{split}", "data.gz"), data)
    graph_dir = os.path.join(root, "transform_graph")
    metadata = dataset_metadata.DatasetMetadata(
        schema_utils.schema_from_feature_spec(_raw_feature_spec())
    )
    with (
        tempfile.TemporaryDirectory() as temp,
        beam.Pipeline() as pipeline,
        tft_beam.Context(temp_dir=temp, force_tf_compat_v1=False),
    ):
        train = pipeline | "Train" >> beam.Create(_instances(raw["train"]))
        transform_fn = (train, metadata) | tft_beam.AnalyzeDataset(preprocessing_fn)
        _ = transform_fn | tft_beam.WriteTransformFn(graph_dir)
        _ = metadata | tft_beam.WriteMetadata(os.path.join(graph_dir, "metadata"), pipeline)
    # The transformed Examples: the raw ones through the written graph (what TransformDataset
    # writes), label included.
    layer = tft.TFTransformOutput(graph_dir).transform_features_layer()
    transformed = {}
    for split, data in raw.items():
        features = layer({k: tf.constant(v) for k, v in data.items()})
        transformed[split] = {k: np.asarray(v).reshape(len(v), -1) for k, v in features.items()}
        write_split(os.path.join(root, "examples", f"Split-{split}", "data.gz"), transformed[split])
    return graph_dir, transformed["train"], transformed["eval"]


def transform_serving_signature(model, raw_feature_spec: dict, label_key: str = TRANSFORM_LABEL):
    """The serving signature TFX's templates (penguin, taxi) export with a Transform: raw
    serialized tf.Examples in (``examples``), parsed with the raw feature spec less the label,
    through ``model.tft_layer``, the model's output out under ``outputs``."""
    import tensorflow as tf

    spec = {k: v for k, v in raw_feature_spec.items() if k != label_key}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve_tf_examples_fn(serialized_tf_examples):
        parsed = tf.io.parse_example(serialized_tf_examples, spec)
        transformed = model.tft_layer(parsed)
        return {"outputs": model(transformed)}

    return serve_tf_examples_fn


# The Transform case is built once per process (Beam analysis and training: ~10 s) and copied.
_transform_built: list[str] = []


def tfx_transform_mlp(root: str) -> ZooCase:
    """A Trainer model on a Transform's output, exported as TFX's templates export it: Examples
    are the transformed examples (``size_xf`` z-scored, ``color_xf`` a vocabulary index,
    ``age_xf`` a bucket), the model embeds the two indices and classifies, and
    ``serving_default`` takes raw tf.Examples through the Transform graph (``model.tft_layer``).
    Also written: ``raw_examples/`` (what the Transform read) and ``transform_graph/``."""
    import shutil

    built = next((r for r in _transform_built if os.path.isdir(os.path.join(r, "model"))), None)
    if built is None:
        _build_transform_case(root)
        _transform_built.append(root)
    else:
        for name in ("model", "examples", "raw_examples", "transform_graph"):
            shutil.copytree(os.path.join(built, name), os.path.join(root, name))
    return ZooCase(
        "tfx_transform_mlp",
        os.path.join(root, "model"),
        os.path.join(root, "examples"),
        "multiclass",
        config={"data": {"raw_examples": os.path.join(root, "raw_examples")}},
    )


def _build_transform_case(root: str) -> None:
    import tensorflow_transform as tft
    import tf_keras

    graph_dir, train, _ = run_transform(root)
    tf_keras.utils.set_random_seed(0)
    layers = tf_keras.layers
    size = layers.Input((1,), name="size_xf")
    color = layers.Input((1,), dtype="int64", name="color_xf")
    age = layers.Input((1,), dtype="int64", name="age_xf")
    color_vector = layers.Flatten()(layers.Embedding(3, 4, name="color_embedding")(color))
    age_vector = layers.Flatten()(layers.Embedding(4, 4, name="age_embedding")(age))
    x = layers.Concatenate()([size, color_vector, age_vector])
    x = layers.Dense(32, activation="relu")(x)
    model = tf_keras.Model([size, color, age], layers.Dense(3, activation="softmax")(x))
    model.compile(tf_keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    x_train = {k: train[k] for k in ("size_xf", "color_xf", "age_xf")}
    model.fit(x_train, train[TRANSFORM_LABEL], epochs=EPOCHS, batch_size=32, verbose=0)
    tft_output = tft.TFTransformOutput(graph_dir)
    model.tft_layer = tft_output.transform_features_layer()  # tracked: saved with the model
    path = os.path.join(root, "model")
    signature = transform_serving_signature(model, tft_output.raw_feature_spec())
    model.save(path, save_format="tf", signatures={"serving_default": signature})


def tfx_transform_raw(root: str) -> ZooCase:
    """:func:`tfx_transform_mlp` fed the raw Examples (ExampleGen's output) and the Transform's
    ``transform_graph`` (``data.transform_graph``): every step transforms them itself."""
    case = tfx_transform_mlp(root)
    return ZooCase(
        "tfx_transform_raw",
        case.model_dir,
        os.path.join(root, "raw_examples"),
        "multiclass",
        config={"data": {"transform_graph": os.path.join(root, "transform_graph")}},
    )


BUILDERS = {
    "binary_sigmoid": binary_sigmoid,
    "multilabel_sigmoid": multilabel_sigmoid,
    "regression_linear": regression_linear,
    "unet_segmentation": unet_segmentation,
    "two_inputs_named": two_inputs_named,
    "two_inputs_keys": lambda root: two_inputs_named(root, ["image", "aux"]),
    "tiny_layers": tiny_layers,
    "mobilenet_block": mobilenet_block,
    "text_embedding": text_embedding,
    "residual_bn": residual_bn,
    "multi_output": multi_output,
    "tfx_template_cnn": tfx_template_cnn,
    "transformer_tokens": transformer_tokens,
    "lstm_binary": lstm_binary,
    "bidirectional_gru": bidirectional_gru,
    "encoded_images": encoded_images,
    "tfx_transform_mlp": tfx_transform_mlp,
    "tfx_transform_raw": tfx_transform_raw,
}
