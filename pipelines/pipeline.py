"""The pipeline factory: one ``tfx.dsl.Pipeline`` from a :class:`PipelineConfig`, for every runner.

ExampleGen, CheckpointImporter -> ModelImporter -> BaselineProfiler
  -> [Distiller] -> [Pruner] -> [Clusterer] -> Quantizer_<name> (one branch per candidate)
  -> Profiler_<name> -> Evaluator (the gate) -> Pusher

With ``candidates:`` (recipes) the optimisation part is a tree instead of one chain: stages
shared by several recipes run once (:mod:`pipelines.recipes` plans it).

The candidate steps (Quantizer_<name>, Profiler_<name>) isolate their failures: a candidate whose
verification, conversion or measurement fails is marked failed and rejected by the Evaluator,
while the shared steps (ExampleGen, BaselineProfiler, Distiller, Pruner, Clusterer) fail the run
(see components/common/candidate.py).
"""

from __future__ import annotations

from components.common.keys import (
    BLESSING_KEY,
    EXAMPLES_KEY,
    IMPORTED_MODEL_KEY,
    LATENCY_REPORT_KEY,
    MODEL_KEY,
    OPTIMIZED_MODEL_KEY,
    PROFILE_KEY,
)
from pipelines.config import PipelineConfig
from pipelines.recipes import (
    CLUSTERER_ID,
    DISTILLER_ID,
    PRUNER_ID,
    profiler_id,
    quantizer_id,
)

__all__ = [
    "CLUSTERER_ID",
    "DISTILLER_ID",
    "PRUNER_ID",
    "create_pipeline",
    "profiler_id",
    "quantizer_id",
]

EXAMPLE_GEN_ID = "ExampleGen"
IMPORTER_ID = "CheckpointImporter"
MODEL_IMPORTER_ID = "ModelImporter"
BASELINE_PROFILER_ID = "BaselineProfiler"
EVALUATOR_ID = "Evaluator"
LATENCY_BENCHMARK_ID = "LatencyBenchmark"
PUSHER_ID = "Pusher"


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
    from tfx.dsl.components.common.importer import IMPORT_RESULT_KEY, Importer
    from tfx.types import standard_artifacts

    from components.importer.component import ModelImporter
    from components.profiler.component import Profiler

    data = config.data
    example_gen = _example_gen(config, examples_uri).with_id(EXAMPLE_GEN_ID)
    examples = example_gen.outputs[EXAMPLES_KEY]
    checkpoint = Importer(source_uri=model_uri, artifact_type=standard_artifacts.Model).with_id(
        IMPORTER_ID
    )
    # One flat tf_keras model for every later step: Keras 3 converted, nested models flattened.
    model_importer = ModelImporter(
        model=checkpoint.outputs[IMPORT_RESULT_KEY],
        examples=examples,
        config=config.importer,
        data_config=data,
    ).with_id(MODEL_IMPORTER_ID)
    baseline = model_importer.outputs[IMPORTED_MODEL_KEY]
    baseline_profiler = Profiler(
        model=baseline, examples=examples, config=config.profiler, data_config=data
    ).with_id(BASELINE_PROFILER_ID)
    components = [example_gen, checkpoint, model_importer, baseline_profiler]

    # The optimisation DAG: the recipes (shared prefixes once) or the sections as one chain.
    stages, candidates = _optimisation_stages(config.plan(), baseline, examples, data)
    components += stages
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
            profiles[name] = profiler.outputs[PROFILE_KEY]
            components.append(profiler)

    latency_report = None
    if config.latency_benchmark is not None:
        # Its own step, so that on Kubeflow its pod can be pinned to the target hardware
        # (kubeflow.steps.LatencyBenchmark); the Evaluator's latency rules use its figures.
        from components.latency_benchmark.component import LatencyBenchmark

        benchmark = LatencyBenchmark(
            baseline_model=baseline,
            candidates=candidates,
            examples=examples,
            config=config.latency_benchmark,
            data_config=data,
        ).with_id(LATENCY_BENCHMARK_ID)
        components.append(benchmark)
        latency_report = benchmark.outputs[LATENCY_REPORT_KEY]

    from components.evaluator.component import Evaluator

    evaluator = Evaluator(
        baseline_model=baseline,
        candidates=candidates,
        examples=examples,
        baseline_profile=baseline_profiler.outputs[PROFILE_KEY],
        candidate_profiles=profiles or None,
        latency_report=latency_report,
        config=config.evaluator,
        data_config=data,
    ).with_id(EVALUATOR_ID)
    components.append(evaluator)

    if config.pusher is not None:
        from components.pusher.component import Pusher

        pusher = Pusher(
            model=evaluator.outputs[MODEL_KEY],
            model_blessing=evaluator.outputs[BLESSING_KEY],
            config=config.pusher,
        ).with_id(PUSHER_ID)
        components.append(pusher)
    return _pipeline(config, pipeline_root, components, metadata_connection_config)


def _stage_component(kind: str, config, model, examples, data):
    """The component of one stage; each reads ``model`` and writes ``optimized_model``."""
    if kind == "distiller":
        from components.distiller.component import Distiller

        return Distiller(model=model, examples=examples, config=config, data_config=data)
    if kind in ("pruner", "structured"):
        from components.pruner.component import Pruner

        return Pruner(model=model, examples=examples, config=config, data_config=data)
    if kind == "clusterer":
        from components.clusterer.component import Clusterer

        return Clusterer(model=model, examples=examples, config=config, data_config=data)
    from components.quantizer.component import Quantizer

    # A candidate's own step: its failure rejects the candidate, not the run.
    return Quantizer(
        model=model, examples=examples, config=config, data_config=data, isolate_failures=True
    )


def _optimisation_stages(plan, baseline, examples, data):
    """One component per planned stage, each reading its parent's model (or the baseline).

    Returns:
      (the components in topological order, {candidate name: its model channel}).
    """
    models, components = {None: baseline}, []
    for node in plan.stages:
        stage = _stage_component(node.kind, node.config, models[node.parent], examples, data)
        components.append(stage.with_id(node.node_id))
        models[node.node_id] = stage.outputs[OPTIMIZED_MODEL_KEY]
    return components, {name: models[node_id] for name, node_id in plan.candidates.items()}


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
