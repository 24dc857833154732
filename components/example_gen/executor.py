"""An ExampleGen executor that copies TFX Examples files instead of re-encoding them with Beam.

The pipeline's input is already TFX Examples (``Split-<name>/`` of TFRecords of tf.Example, e.g.
the ExampleGen output of the training pipeline). TFX's ``ImportExampleGen`` reads every record and
writes it out again through an Apache Beam pipeline: the same bytes, after several seconds of Beam
start-up even for a few thousand records. This executor runs under the same component
(``FileBasedExampleGen``, so the same driver resolves spans and fingerprints the input files, and
the same caching applies: unchanged files, a cached step) and gives the same artifact: a snapshot
of the data in the pipeline root, gzipped TFRecords, ``split_names``, payload and file format. It
copies gzipped files as they are (a server-side copy on object stores), re-compresses plain
TFRecord files, and reads every record once on the way, so a truncated or corrupt file fails here
(with its path) as it would in ``ImportExampleGen``.

Choose ``example_gen: beam`` in the pipeline config for ``ImportExampleGen`` (a Beam runner that
parallelises the copy, e.g. Dataflow, for very large inputs).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from tfx.components.example_gen import write_split
from tfx.dsl.components.base import base_executor
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import proto_utils

from components.common import artifact_output
from components.common.errors import DataError

log = logging.getLogger(__name__)

GZIP_MAGIC = b"\x1f\x8b"


def _is_gzip(path: str) -> bool:
    import tensorflow as tf

    with tf.io.gfile.GFile(path, "rb") as f:
        return f.read(2) == GZIP_MAGIC


def _record_batches(path: str, compression: str):
    """Every record of a file, in batches (length and data CRCs checked); fails naming the file."""
    import tensorflow as tf

    try:
        yield from tf.data.TFRecordDataset(path, compression_type=compression).batch(4096)
    except tf.errors.OpError as e:
        raise DataError(
            f"{path} is not a readable TFRecord file ({e.message.splitlines()[0]}): "
            "the Examples input must be TFRecords of tf.Example (gzipped or not)."
        ) from None


def copy_split(files: list[str], destination: str) -> int:
    """Copies one split's files into ``destination`` as gzipped TFRecords; returns the records.

    A gzipped file is read once to check it, then copied as it is; a plain one is gzipped while
    it is read.
    """
    import tensorflow as tf

    tf.io.gfile.makedirs(destination)
    total = 0
    for index, source in enumerate(files):
        target = os.path.join(destination, f"data_tfrecord-{index:05d}-of-{len(files):05d}.gz")
        if _is_gzip(source):
            total += sum(int(b.shape[0]) for b in _record_batches(source, "GZIP"))
            tf.io.gfile.copy(source, target, overwrite=True)
            continue
        options = tf.io.TFRecordOptions(compression_type="GZIP")
        with tf.io.TFRecordWriter(target, options) as writer:
            for batch in _record_batches(source, ""):
                for record in batch.numpy():
                    writer.write(record)
                total += int(batch.shape[0])
    return total


class Executor(base_executor.BaseExecutor):
    """Copies each input split (``input_config``'s patterns under ``input_base``)."""

    def Do(
        self,
        input_dict: dict[str, list[Any]],
        output_dict: dict[str, list[Any]],
        exec_properties: dict[str, Any],
    ) -> None:
        import tensorflow as tf

        input_config = example_gen_pb2.Input()
        proto_utils.json_to_proto(
            exec_properties[standard_component_specs.INPUT_CONFIG_KEY], input_config
        )
        input_base = exec_properties[standard_component_specs.INPUT_BASE_KEY]
        examples = artifact_utils.get_single_instance(
            output_dict[standard_component_specs.EXAMPLES_KEY]
        )
        examples.split_names = artifact_utils.encode_split_names(
            [split.name for split in input_config.splits]
        )
        inputs = {}  # every split's files, before anything is written
        for split in input_config.splits:
            pattern = os.path.join(input_base, split.pattern)
            inputs[split.name] = sorted(
                f for f in tf.io.gfile.glob(pattern) if not tf.io.gfile.isdir(f)
            )
            if not inputs[split.name]:
                raise DataError(
                    f"split {split.name!r}: no files match {pattern}; the Examples directory "
                    f"needs Split-{split.name}/ with TFRecord files."
                )
        counts = {}
        # Nothing half-written stays in the output artifact.
        with artifact_output.all_or_nothing(examples.uri):
            for name, files in inputs.items():
                destination = artifact_utils.get_split_uri([examples], name)
                counts[name] = copy_split(files, destination)
                log.info(
                    "ExampleGen: %s: %d records from %d file(s)", name, counts[name], len(files)
                )
        from tfx.components.util import examples_utils

        examples_utils.set_payload_format(examples, example_gen_pb2.FORMAT_TF_EXAMPLE)
        examples_utils.set_file_format(
            examples, write_split.to_file_format_str(example_gen_pb2.FORMAT_TFRECORDS_GZIP)
        )
        examples.set_json_value_custom_property("num_examples", counts)
