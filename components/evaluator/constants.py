"""The Evaluator's keys, file names and property names (the shared ones live in
:mod:`components.common.keys`; this module adds what only the Evaluator has)."""

# Re-exported: the Evaluator's modules read every name they need from here.
from components.common.keys import (  # noqa: F401
    BASELINE_MODEL_KEY,
    BASELINE_PROFILE_KEY,
    BLESSED_FILE,
    BLESSED_PROPERTY,
    BLESSING_KEY,
    EVALUATION_FILE,
    EVALUATION_KEY,
    EXAMPLES_KEY,
    LATENCY_REPORT_KEY,
    MODEL_KEY,
    NOT_BLESSED_FILE,
    NOT_SELECTED_FILE,
    PRODUCTION_METRICS_FILE,
)

MAX_CANDIDATES = 8

# What a gate with no threshold rule does: the config schema (an absent `evaluator`) and the
# Evaluator's warning say it in these words.
NO_RULES_MEANING = (
    "no rule is set, so the gate blesses nothing and nothing is pushed (fail closed); the "
    "default recipe's rules are in pipelines/configs/default.yaml"
)

# Exec properties (besides config / data_config)
CANDIDATE_NAMES_KEY = "candidate_names"

# Values of the blessing's ``blessed`` property, as the standard Evaluator writes them.
BLESSED_VALUE = 1
NOT_BLESSED_VALUE = 0


def candidate_key(index: int) -> str:
    """Input key of the index-th candidate Model."""
    return f"candidate_{index}"


def candidate_profile_key(index: int) -> str:
    """Input key of the index-th candidate's ModelProfile."""
    return f"candidate_profile_{index}"
