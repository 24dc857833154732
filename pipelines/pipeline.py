"""The pipeline factory: one ``tfx.dsl.Pipeline`` from a :class:`PipelineConfig`, for every runner.

ExampleGen, CheckpointImporter -> ModelImporter -> BaselineProfiler
  -> [Distiller] -> [Pruner] -> [Clusterer] -> Quantizer_<name> (one branch per candidate)
  -> Profiler_<name> -> Evaluator (the gate) -> Pusher

The candidate steps (Quantizer_<name>, Profiler_<name>) isolate their failures: a candidate whose
verification, conversion or measurement fails is marked failed and rejected by the Evaluator,
while the shared steps (ExampleGen, BaselineProfiler, Distiller, Pruner, Clusterer) fail the run
(see components/common/candidate.py).
"""

from __future__ import annotations

from pipelines.config import PipelineConfig

EXAMPLE_GEN_ID = "ExampleGen"
IMPORTER_ID = "CheckpointImporter"
MODEL_IMPORTER_ID = "ModelImporter"
BASELINE_PROFILER_ID = "BaselineProfiler"
DISTILLER_ID = "Distiller"
PRUNER_ID = "Pruner"
CLUSTERER_ID = "Clusterer"
EVALUATOR_ID = "Evaluator"
PUSHER_ID = "Pusher"


def quantizer_id(name: str) -> str:
    return f"Quantizer_{name}"


def profiler_id(name: str) -> str:
    return f"Profiler_{name}"


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
      model_uri: the new checkpoint (a tf_keras SavedModel directory, or a Keras 3 ``.keras``
        file or a directory holding one); a string, or a RuntimeParameter
        so one compiled KFP pipeline serves every checkpoint.
      examples_uri: TFX Examples directory (``Split-train/``, ``Split-eval/``).
      pipeline_root: where artifacts are written.
      metadata_connection_config: ML Metadata connection (None: the runner's default).
    """
    # The modules themselves, not ``tfx.v1``: that one also imports every TFX component and the
    # Vertex AI client (about 10 s a process on 2 cores).
    from tfx.dsl.components.common.importer import Importer
    from tfx.types import standard_artifacts

    from components.importer.component import OUTPUT_MODEL_KEY as IMPORTED_MODEL_KEY
    from components.importer.component import ModelImporter
    from components.profiler.component import Profiler

    data = config.data
    example_gen = _example_gen(config, examples_uri).with_id(EXAMPLE_GEN_ID)
    examples = example_gen.outputs["examples"]
    checkpoint = Importer(source_uri=model_uri, artifact_type=standard_artifacts.Model).with_id(
        IMPORTER_ID
    )
    # One flat tf_keras model for every later step: Keras 3 converted, nested models flattened.
    model_importer = ModelImporter(
        model=checkpoint.outputs["result"],
        examples=examples,
        config=config.importer,
        data_config=data,
    ).with_id(MODEL_IMPORTER_ID)
    baseline = model_importer.outputs[IMPORTED_MODEL_KEY]
    baseline_profiler = Profiler(
        model=baseline, examples=examples, config=config.profiler, data_config=data
    ).with_id(BASELINE_PROFILER_ID)
    components = [example_gen, checkpoint, model_importer, baseline_profiler]

    # The weight-optimisation chain: each enabled stage takes the previous stage's model.
    model, last_stage = baseline, None
    if config.distiller is not None:
        from components.distiller.component import Distiller

        stage = Distiller(
            teacher=model, examples=examples, config=config.distiller, data_config=data
        ).with_id(DISTILLER_ID)
        model, last_stage = stage.outputs["model"], "distilled"
        components.append(stage)
    if config.pruner is not None:
        from components.pruner.component import Pruner

        stage = Pruner(model=model, examples=examples, config=config.pruner, data_config=data)
        stage = stage.with_id(PRUNER_ID)
        model, last_stage = stage.outputs["pruned_model"], "pruned"
        components.append(stage)
    if config.clusterer is not None:
        from components.clusterer.component import Clusterer

        stage = Clusterer(model=model, examples=examples, config=config.clusterer, data_config=data)
        stage = stage.with_id(CLUSTERER_ID)
        model, last_stage = stage.outputs["clustered_model"], "clustered"
        components.append(stage)

    candidates = {}
    if config.quantization:
        from components.quantizer.component import OUTPUT_MODEL_KEY, Quantizer

        for candidate in config.quantization:
            name = candidate.candidate_name
            quantizer = Quantizer(
                model=model,
                examples=examples,
                config=candidate.quantizer_config(),
                data_config=data,
                isolate_failures=True,
            ).with_id(quantizer_id(name))
            candidates[name] = quantizer.outputs[OUTPUT_MODEL_KEY]
            components.append(quantizer)
    elif last_stage is not None:
        candidates[last_stage] = model
    if not candidates:
        return _pipeline(config, pipeline_root, components, metadata_connection_config)

    profiles = {}
    if config.profile_candidates:
        for name, channel in candidates.items():
            profiler = Profiler(
                model=channel,
                examples=examples,
                config=config.profiler,
                data_config=data,
                isolate_failures=True,
            ).with_id(profiler_id(name))
            profiles[name] = profiler.outputs["profile"]
            components.append(profiler)

    from components.evaluator.component import Evaluator

    evaluator = Evaluator(
        baseline_model=baseline,
        candidates=candidates,
        examples=examples,
        baseline_profile=baseline_profiler.outputs["profile"],
        candidate_profiles=profiles or None,
        config=config.evaluator,
        data_config=data,
    ).with_id(EVALUATOR_ID)
    components.append(evaluator)

    if config.pusher is not None:
        from components.pusher.component import Pusher

        pusher = Pusher(
            model=evaluator.outputs["model"],
            model_blessing=evaluator.outputs["blessing"],
            config=config.pusher,
        ).with_id(PUSHER_ID)
        components.append(pusher)
    return _pipeline(config, pipeline_root, components, metadata_connection_config)


def _example_gen(config: PipelineConfig, examples_uri):
    """The input Examples' step: the files copied (``example_gen: copy``) or ImportExampleGen.

    Both are TFX's ``FileBasedExampleGen`` (one driver: spans, input fingerprints, caching); the
    copy swaps in :mod:`components.example_gen.executor` for the Beam re-encoding.
    """
    from tfx.components.example_gen.component import FileBasedExampleGen
    from tfx.components.example_gen.import_example_gen.component import ImportExampleGen
    from tfx.dsl.components.base import executor_spec
    from tfx.proto import example_gen_pb2

    from components.example_gen import executor

    splits = (config.data.train_split, config.data.eval_split)
    input_config = example_gen_pb2.Input(
        splits=[example_gen_pb2.Input.Split(name=s, pattern=f"Split-{s}/*") for s in splits]
    )
    if config.example_gen == "beam":
        return ImportExampleGen(input_base=examples_uri, input_config=input_config)
    return FileBasedExampleGen(
        input_base=examples_uri,
        input_config=input_config,
        custom_executor_spec=executor_spec.ExecutorClassSpec(executor.Executor),
    )


def _pipeline(config, pipeline_root, components, metadata_connection_config):
    from tfx.orchestration import pipeline

    return pipeline.Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=pipeline_root,
        components=components,
        enable_cache=config.enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=list(config.beam_pipeline_args),
    )
