"""Keys, file names and property names of the Evaluator (one place, as TFX keeps them)."""

MAX_CANDIDATES = 8

# Inputs
BASELINE_MODEL_KEY = "baseline_model"
BASELINE_PROFILE_KEY = "baseline_profile"
EXAMPLES_KEY = "examples"
LATENCY_REPORT_KEY = "latency_report"

# Exec properties (besides config / data_config)
CANDIDATE_NAMES_KEY = "candidate_names"

# Outputs
BLESSING_KEY = "blessing"
MODEL_KEY = "model"
EVALUATION_KEY = "evaluation"

# Files
EVALUATION_FILE = "evaluation.json"
PRODUCTION_METRICS_FILE = "production_metrics.json"
NOT_SELECTED_FILE = "NOT_SELECTED"
# Same names and values as tfx.components.evaluator.constants, so the standard Pusher and
# tfx.dsl.Cond read our blessing like the standard Evaluator's.
BLESSED_FILE = "BLESSED"
NOT_BLESSED_FILE = "NOT_BLESSED"
BLESSED_PROPERTY = "blessed"
BLESSED_VALUE = 1
NOT_BLESSED_VALUE = 0


def candidate_key(index: int) -> str:
    """Input key of the index-th candidate Model."""
    return f"candidate_{index}"


def candidate_profile_key(index: int) -> str:
    """Input key of the index-th candidate's ModelProfile."""
    return f"candidate_profile_{index}"
