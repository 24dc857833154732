"""The pipeline factory: one ``tfx.dsl.Pipeline`` from a :class:`PipelineConfig`, for every runner."""

from __future__ import annotations

from pipelines.config import PipelineConfig

EXAMPLE_GEN_ID = "ExampleGen"
IMPORTER_ID = "CheckpointImporter"
BASELINE_PROFILER_ID = "BaselineProfiler"


def create_pipeline(
    config: PipelineConfig,
    model_uri,
    examples_uri,
    pipeline_root: str,
    metadata_connection_config=None,
):
    """Builds the pipeline.

    Args:
      config: the validated pipeline config.
      model_uri: the new checkpoint (a SavedModel directory); a string, or a RuntimeParameter
        so one compiled KFP pipeline serves every checkpoint.
      examples_uri: TFX Examples directory (``Split-train/``, ``Split-eval/``).
      pipeline_root: where artifacts are written.
      metadata_connection_config: ML Metadata connection (None: the runner's default).
    """
    from tfx import v1 as tfx
    from tfx.proto import example_gen_pb2

    from components.profiler.component import Profiler

    data = config.data
    example_gen = tfx.components.ImportExampleGen(
        input_base=examples_uri,
        input_config=example_gen_pb2.Input(
            splits=[
                example_gen_pb2.Input.Split(
                    name=data.train_split, pattern=f"Split-{data.train_split}/*"
                ),
                example_gen_pb2.Input.Split(
                    name=data.eval_split, pattern=f"Split-{data.eval_split}/*"
                ),
            ]
        ),
    ).with_id(EXAMPLE_GEN_ID)
    checkpoint = tfx.dsl.Importer(
        source_uri=model_uri, artifact_type=tfx.types.standard_artifacts.Model
    ).with_id(IMPORTER_ID)
    baseline_profiler = Profiler(
        model=checkpoint.outputs["result"],
        examples=example_gen.outputs["examples"],
        config=config.profiler,
        data_config=data,
    ).with_id(BASELINE_PROFILER_ID)

    components = [example_gen, checkpoint, baseline_profiler]
    return tfx.dsl.Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=pipeline_root,
        components=components,
        enable_cache=config.enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=list(config.beam_pipeline_args),
    )
