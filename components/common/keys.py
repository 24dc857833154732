"""Every channel key, record file name and custom-property name shared by two or more modules.

One place, as TFX keeps its own in ``tfx/types/standard_component_specs.py``. This module imports
nothing (no TFX, no TensorFlow, nothing of ours), so readers such as the run report use it without
paying for TFX's import.
"""

# --------------------------------------------------------------------------- channel keys
# The model-in/model-out components (Pruner, Clusterer, Quantizer, Distiller) read ``model``, as
# TFX's Evaluator and Pusher do, and write a new channel named for what it holds, as Transform
# writes ``transformed_examples`` (TFX wants input and output names distinct).
MODEL_KEY = "model"
EXAMPLES_KEY = "examples"
OPTIMIZED_MODEL_KEY = "optimized_model"
IMPORTED_MODEL_KEY = "imported_model"  # the ModelImporter's output
PROFILE_KEY = "profile"  # the Profiler's output
PUSHED_MODEL_KEY = "pushed_model"  # the Pusher's output (TFX's name)
MODEL_BLESSING_KEY = "model_blessing"  # the Pusher's input (TFX's name)
# The Evaluator's
BASELINE_MODEL_KEY = "baseline_model"
BASELINE_PROFILE_KEY = "baseline_profile"
LATENCY_REPORT_KEY = "latency_report"
BLESSING_KEY = "blessing"
EVALUATION_KEY = "evaluation"

# Exec properties
CONFIG_KEY = "config"
DATA_CONFIG_KEY = "data_config"
ISOLATE_FAILURES_KEY = "isolate_failures"

# --------------------------------------------------------------------------- files
# The standard model layout inside a Model artifact.
SERVING_DIR = "Format-Serving"
TFLITE_DIR = "Format-TFLite"
TFLITE_FILE = "model.tflite"
SAVED_MODEL_PB = "saved_model.pb"

# Records (JSON) beside the model.
PRUNING_RECORD_FILE = "pruning.json"
STRUCTURED_PRUNING_RECORD_FILE = "structured_pruning.json"
CLUSTERING_RECORD_FILE = "clustering.json"
QUANTIZATION_RECORD_FILE = "quantization.json"
DISTILLATION_RECORD_FILE = "distillation.json"
IMPORT_RECORD_FILE = "import.json"
HISTORY_FILE = "fine_tuning_history.json"
PROFILE_FILE = "profile.json"
EVALUATION_FILE = "evaluation.json"
PRODUCTION_METRICS_FILE = "production_metrics.json"
PUSH_FILE = "push.json"
CANDIDATE_FAILURE_FILE = "candidate_failure.json"
METADATA_FILE = "metadata.sqlite"  # the local runs' ML Metadata store, in the output directory

# Blessing markers: the same names as tfx.components.evaluator.constants, so the standard Pusher
# and tfx.dsl.Cond read our blessing like the standard Evaluator's.
BLESSED_FILE = "BLESSED"
NOT_BLESSED_FILE = "NOT_BLESSED"
NOT_SELECTED_FILE = "NOT_SELECTED"

# The baseline's name among the models the Evaluator judges (evaluation.json, the report).
BASELINE = "baseline"

# --------------------------------------------------------------------------- custom properties
# Of every model-in/model-out component's output Model.
INPUT_MODEL_ARTIFACT_ID = "input_model_artifact_id"
OPTIMIZATION = "optimization"  # what the step did: pruned, clustered, quantized, distilled
METRIC = "metric"  # the task metric the before/after figures are of
METRIC_BEFORE = "metric_before"  # of the input model
METRIC_AFTER = "metric_after"  # of the output model
METRIC_WORSE_BY = "metric_worse_by"  # how much worse after is, in the metric's own direction
ACCURACY_BEFORE = "accuracy_before"  # the same figures when the metric is an accuracy
ACCURACY_AFTER = "accuracy_after"
FINE_TUNING_EPOCHS = "fine_tuning_epochs"
FINE_TUNING_WALL_TIME_S = "fine_tuning_wall_time_s"
MODEL_SPARSITY = "model_sparsity"

# Of the Evaluator's blessing (TFX's name).
BLESSED_PROPERTY = "blessed"

# Of a candidate marked failed (components.common.candidate).
FAILED_PROPERTY = "failed"
FAILURE_STEP_PROPERTY = "failure_step"
FAILURE_REASON_PROPERTY = "failure_reason"
FAILURE_SUMMARY_PROPERTY = "failure_summary"
FAILURE_COMPONENT_PROPERTY = "failure_component"
UPSTREAM_FAILED_PROPERTY = "upstream_failed"
